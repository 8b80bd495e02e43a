"""The nightly job when the stream keeps the live tables in PostgreSQL: it copies what the
stream stored into the lake (the events also every five minutes), builds the models there,
applies the nightly segments to PostgreSQL's membership, and checks the real-time ones, which
the stream keeps, for parity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg

from demo.traffic import event
from segops.lake import lake_connection
from segops.live_import import import_live_raw
from segops.live_reach import read_segment_inputs
from tests.live_helpers import NOW, lake_rows, nightly, started, stream
from tests.stream_helpers import incoming, rows


def test_the_nightly_reads_what_the_stream_stored_and_writes_postgres(live_shop):
    day = timedelta(days=1)
    stream(live_shop,
           event("berlin", "identify", NOW - 2 * day, country="DE"),
           event("paris", "identify", NOW - 2 * day, country="FR"),
           event("buyer", "purchase", NOW - day, order_value=80.0, order_id="o1"))

    first = nightly(live_shop)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(3,)]
    assert lake_rows(live_shop, "select count(*) from segments.dach_customers") == [(1,)]
    assert rows(live_shop, "select customer_id, source from segops.segment_membership "
                           "where segment = 'dach_customers'") == [("berlin", "batch")]
    assert ("buyer", "recent_purchasers") in rows(
        live_shop, "select customer_id, segment from segops.segment_membership")
    size = first.asset_materializations_for_node("membership__dach_customers")[0].metadata["size"]
    assert size.value == 1
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed
              for c in first.get_asset_check_evaluations()}
    assert checks[("membership/recent_purchasers", "parity")], "the stream agrees with dbt"

    stream(live_shop, event("berlin", "identify", NOW - day, country="FR"),
           event("paris", "page_view", NOW - day, path="/"))
    flushed = nightly(live_shop, "flush_events")  # what the five-minute schedule runs
    assert flushed.success
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(5,)]
    assert lake_rows(live_shop, "select country from raw.customers "
                                "where customer_id = 'berlin'") == [("DE",)], "the nightly's"
    again = nightly(live_shop, "flush_events")
    assert again.success
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(5,)], "copied once"
    second = nightly(live_shop)
    assert second.success
    builds = sorted(live_shop.dbt_target_dir.glob("segops_dbt_models-*/dbt.log"),
                    key=lambda log: log.stat().st_mtime)
    assert "Partial parsing enabled" in builds[-1].read_text(), "the second starts from the first"
    metadata = second.asset_materializations_for_node("membership__dach_customers")[0].metadata
    assert (metadata["enters"].value, metadata["exits"].value) == (0, 1)
    assert lake_rows(live_shop, "select country from raw.customers "
                                "where customer_id = 'berlin'") == [("FR",)]
    assert rows(live_shop, "select customer_id, change, source from "
                           "segops.segment_membership_changes where segment = 'dach_customers' "
                           "order by change_id") == [("berlin", "enter", "batch"),
                                                     ("berlin", "exit", "batch")]


def test_a_copy_takes_only_the_profiles_written_since_the_last(live_shop):
    """Each night copies the profiles written since the night before (by the stream, a load or
    anyone's SQL, deletions too), not every customer again; what the lake holds is still
    PostgreSQL's, row for row."""
    traits = "select customer_id, trait, value::varchar from raw.customer_traits order by 1, 2, 3"

    def copy():
        with lake_connection(live_shop.postgres_dsn, live_shop.lake_data_path) as con:
            return import_live_raw(con, live_shop.postgres_dsn)

    stream(live_shop, *(event(name, "identify", NOW - timedelta(days=2), country="DE")
                        for name in ("ann", "bob", "cy")))
    assert copy().customers == 3
    stream(live_shop, event("bob", "identify", NOW - timedelta(days=1), country="FR"))
    second, third = copy(), copy()
    assert (second.customers, second.traits) == (1, 1)
    assert (third.customers, third.traits) == (0, 0)
    assert lake_rows(live_shop, "select customer_id, country from raw.customers order by 1"
                     ) == [("ann", "DE"), ("bob", "FR"), ("cy", "DE")]

    with psycopg.connect(live_shop.postgres_dsn) as pg:  # an administrator's SQL
        pg.execute("update raw.customers set country = 'AT' where customer_id = 'ann'")
        pg.execute("delete from raw.customers where customer_id = 'cy'")
        pg.execute("delete from raw.customer_traits where customer_id = 'cy'")
        pg.execute("update raw.customer_traits set value = '\"CH\"' "
                   "where customer_id = 'bob' and value = '\"DE\"'")
    assert copy().customers == 2, "ann and bob copied again, cy gone"
    assert lake_rows(live_shop, "select customer_id, country from raw.customers order by 1"
                     ) == [("ann", "AT"), ("bob", "FR")]
    assert lake_rows(live_shop, traits) == rows(
        live_shop, traits.replace("value::varchar", "value::text"))


def test_parity_names_whom_the_stream_and_the_batch_disagree_on(live_shop):
    """A member the stream lost and one it should not hold fail the parity check, by name; a
    customer the stream owes a re-evaluation is not held against it."""
    stream(live_shop, *(event(buyer, "purchase", NOW - timedelta(days=1), order_value=80.0,
                              order_id=f"o-{buyer}") for buyer in ("buyer", "owed")))
    with psycopg.connect(live_shop.postgres_dsn, autocommit=True) as pg:
        pg.execute("delete from segops.segment_membership where segment = 'recent_purchasers' "
                   "and customer_id in ('buyer', 'owed')")
        pg.execute("insert into segops.segment_membership (customer_id, segment, entered_at, "
                   "source) values ('ghost', 'recent_purchasers', %s, 'realtime')", [NOW])
        pg.execute("insert into segops.reevaluate_queue (customer_id, reason) "
                   "values ('owed', 'busy')")

    result = nightly(live_shop)

    (parity,) = [c for c in result.get_asset_check_evaluations()
                 if c.asset_key.to_user_string() == "membership/recent_purchasers"
                 and c.check_name == "parity"]
    assert not parity.passed
    found = {name: value.value for name, value in parity.metadata.items()}
    assert (found["missing_from_stream"], found["unexpected_in_stream"]) == (1, 1)
    assert (found["sample_missing"], found["sample_unexpected"]) == ("buyer", "ghost")
    assert found["batch_size"] == 1, "the owed customer is left out of both sides"


def test_lake_maintenance_merges_the_flushes_files(live_shop):
    """Each flush writes a file of its own (beyond the few rows the catalog keeps inline); the
    daily job merges them and the lake reads the same."""
    for flush in range(3):
        stream(live_shop, *(event(f"c{flush}", "page_view", NOW + timedelta(seconds=second),
                                  path=f"/{second}") for second in range(20)))
        assert nightly(live_shop, "flush_events").success
    files = "select count(*) from ducklake_list_files('warehouse', 'events', schema => 'raw')"
    before = lake_rows(live_shop, files)[0][0]
    assert nightly(live_shop, "lake_maintenance").success
    assert lake_rows(live_shop, files)[0][0] < before
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(60,)]


def test_two_copies_at_once_add_each_event_once(live_shop):
    """The nightly's copy and the five-minute flush may overlap; the lake, which has no keys,
    still gets every event once."""
    stream(live_shop, *(event("c", "page_view", NOW + timedelta(seconds=s), path=f"/{s}")
                        for s in range(30)))

    def copy() -> None:
        with lake_connection(live_shop.postgres_dsn, live_shop.lake_data_path) as con:
            import_live_raw(con, live_shop.postgres_dsn, profiles=False)

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(copy) for _ in range(2)]:
            done.result()
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(30,)]


def test_a_batch_still_open_during_a_flush_reaches_the_lake_once_it_commits(live_shop):
    """Consumers commit out of order: a flush copies only the transactions that have ended, and
    preview reads the rest from PostgreSQL, so nothing is missed or read twice."""
    def flush() -> None:
        assert nightly(live_shop, "flush_events").success

    def seen() -> tuple[int, int]:
        with read_segment_inputs(live_shop) as con:
            return con.execute("select count(*), count(distinct event_id) from raw.events"
                               ).fetchone()

    events = [incoming(event("c", "page_view", NOW + timedelta(seconds=s), path=f"/{s}"))
              for s in range(5)]
    with started(live_shop) as consumer:
        consumer.process(events[:3])
        with psycopg.connect(live_shop.postgres_dsn) as open_batch:
            open_batch.execute("insert into raw.events (customer_id, event_id, event_type, "
                               "occurred_at) values ('late', 'l1', 'page_view', %s)", [NOW])
            flush()
            consumer.process(events[3:])  # committed while the open batch is still open
            flush()
            assert lake_rows(live_shop, "select count(*) from raw.events") == [(3,)]
            assert seen() == (5, 5), "the lake's three and the two committed since"
    flush()
    assert lake_rows(live_shop, "select count(*) from raw.events") == [(6,)]
    assert seen() == (6, 6)
