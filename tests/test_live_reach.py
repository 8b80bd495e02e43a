"""Preview and diff with the live state in PostgreSQL: they read the lake's history plus the
tail PostgreSQL holds beyond it, and profiles and membership from PostgreSQL, so an event a
consumer committed a moment ago is in the reach, before any flush."""

from __future__ import annotations

import json
from datetime import timedelta

from demo.traffic import event
from segops.dbt import compile_segments, run_dbt
from segops.live_reach import read_segment_inputs
from segops.preview import resolve_target, run_preview
from segops_cli.main import main
from tests.live_helpers import NOW, nightly, stream, views
from tests.projects import committed_project


def reach(settings, segment: str) -> tuple[int, list[str]]:
    result = run_preview(settings, resolve_target(settings, segment, None), NOW)
    return result.reach, [customer for customer, _ in result.sample]


def test_preview_reads_what_the_stream_committed_a_moment_ago(live_shop):
    stream(live_shop, *views("paris", 30))
    assert reach(live_shop, "high_intent_browsers") == (1, ["paris"]), "nothing flushed yet"

    assert nightly(live_shop, "flush_events").success
    stream(live_shop, *views("rome", 20), event("berlin", "identify", NOW, country="DE"))
    assert reach(live_shop, "high_intent_browsers") == (2, ["paris", "rome"]), "lake + tail"
    assert reach(live_shop, "dach_customers") == (1, ["berlin"]), "profiles from PostgreSQL"
    with read_segment_inputs(live_shop) as con:
        assert con.execute("select count(*), count(distinct event_id) from raw.events"
                           ).fetchone() == (7, 7), "the flushed events are not read twice"


def test_preview_compares_with_the_membership_the_stream_keeps(live_shop):
    stream(live_shop, *views("paris", 30))
    result = run_preview(live_shop, resolve_target(live_shop, "high_intent_browsers", None),
                         NOW + timedelta(minutes=45))
    assert (result.reach, result.enters, result.exits, result.exit_sample) == (
        0, 0, 1, ["paris"]), "paris's views leave the hour: the stream's member would exit"


def test_a_model_table_is_read_from_the_lake_as_the_nightly_built_it(live_shop):
    stream(live_shop, event("berlin", "identify", NOW - timedelta(days=1), country="DE"))
    assert nightly(live_shop).success
    stream(live_shop, event("vienna", "identify", NOW, country="AT"))
    built = run_preview(live_shop, resolve_target(
        live_shop, None, "select customer_id from {{ ref('dach_customers') }}"), NOW)
    assert [customer for customer, _ in built.sample] == ["berlin"], "the nightly's table"
    assert reach(live_shop, "dach_customers") == (2, ["berlin", "vienna"]), "its SQL, live"


def test_preview_compiles_what_a_bare_parse_left_uncompiled(live_shop):
    run_dbt(live_shop, ["parse"])  # a manifest without compiled SQL, as `dbt parse` leaves it
    stream(live_shop, *views("paris", 30))
    assert reach(live_shop, "high_intent_browsers") == (1, ["paris"])


def test_the_command_previews_sql_on_a_segment_through_the_views_that_segment_reads(
        live_shop, capsys):
    stream(live_shop, *views("paris", 30), *views("rome", 20),
           event("rome", "identify", NOW, country="IT"))
    main(["preview", "--json", "--sql",
          "select customer_id from {{ ref('high_intent_browsers') }} where customer_id > 'q'"])
    answer = json.loads(capsys.readouterr().out)
    assert (answer["reach"], answer["customers"]) == (1, 1), "one profile in PostgreSQL"
    assert [row["customer_id"] for row in answer["sample"]] == ["rome"]
    assert answer["segment"] == "inline"
    assert answer["overlap"] == {"high_intent_browsers": 1}, "the stream's membership"
    assert answer["evaluated_at"] == NOW.isoformat(sep=" "), "the pinned now"


def test_diff_on_postgres_moves_who_a_change_would_move_in_every_changed_segment(
        live_shop, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    settings = committed_project(repo, monkeypatch)
    compile_segments(settings)
    stream(settings, *views("paris", 30), *views("rome", 100))
    segments = repo / "dbt_project" / "models" / "segments"
    for name, before, after in (
            ("high_intent_browsers", "interval '1 hour'", "interval '2 hours'"),
            ("cart_abandoners", "interval '30 minutes'", "interval '45 minutes'")):
        path = segments / f"{name}.sql"
        path.write_text(path.read_text().replace(before, after))

    main(["diff", "--base", "main", "--format", "json"])
    diffs = {d["segment"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(diffs) == {"high_intent_browsers", "cart_abandoners"}
    browsers = diffs["high_intent_browsers"]
    assert (browsers["enters"], browsers["exits"]) == (1, 0), "rome's views were 100 minutes ago"
    assert [m["customer_id"] for m in browsers["enter_sample"]] == ["rome"]
    assert browsers["after"]["overlap"] == {}, "paris is in no other segment"
    assert (diffs["cart_abandoners"]["enters"], diffs["cart_abandoners"]["exits"]) == (0, 0)
