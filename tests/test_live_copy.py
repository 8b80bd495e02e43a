"""A former single-file warehouse's history moves into PostgreSQL whole, once (`segops
import-warehouse`): events, profiles, membership and its changes, with new changes numbered
after the copied ones; and a generated shop goes into PostgreSQL's empty tables."""

from __future__ import annotations

from datetime import datetime

import duckdb
import psycopg
import pytest

from segops.errors import SegOpsError
from segops.live_copy import copy_to_postgres
from segops.live_membership import apply_found
from segops.schema import ensure_schema
from segops_cli.main import main

AT = datetime(2026, 6, 1, 12, 0)


def test_the_history_arrives_whole_and_only_once(tmp_path, live_dsn, monkeypatch, capsys):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        ensure_schema(con)
        con.execute("insert into raw.events (event_id, customer_id, event_type, occurred_at, "
                    "properties) values ('e1', 'ann', 'page_view', $at, '{\"path\": \"/\"}')",
                    {"at": AT})
        con.execute("insert into raw.customers (customer_id, country, signed_up_at, traits) "
                    "values ('ann', 'NL', $at, '{\"plan\": \"pro\"}')", {"at": AT})
        con.execute("insert into segops.segment_membership values "
                    "('browsers', 'ann', $at, 'realtime', null)", {"at": AT})
        con.execute("insert into segops.segment_membership_changes (change_id, segment, "
                    "customer_id, change, changed_at, source) values "
                    "(41, 'browsers', 'ann', 'enter', $at, 'realtime')", {"at": AT})
    copied = copy_to_postgres(warehouse, live_dsn)
    assert copied == {"raw.customers": 1, "raw.customer_traits": 0, "raw.events": 1,
                      "segops.segment_membership": 1, "segops.segment_membership_changes": 1}
    with psycopg.connect(live_dsn) as pg:
        assert pg.execute("select properties, occurred_at from raw.events").fetchall() == [
            ({"path": "/"}, AT)]
        assert pg.execute("select traits from raw.customers").fetchall() == [({"plan": "pro"},)]
        apply_found(pg, [], segments=["browsers"], customers=["ann"], source="realtime",
                    changed_at=AT)
        assert pg.execute("select change_id, change from segops.segment_membership_changes "
                          "order by change_id").fetchall() == [(41, "enter"), (42, "exit")]
    with pytest.raises(SegOpsError, match="already holds rows"):
        copy_to_postgres(warehouse, live_dsn)
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    main(["import-warehouse", str(warehouse), "--if-empty"])
    assert "nothing copied" in capsys.readouterr().out


def test_a_shop_is_generated_into_postgres_once(live_dsn, monkeypatch, capsys):
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    main(["generate", "--customers", "40", "--seed", "3"])
    with psycopg.connect(live_dsn) as pg:
        customers, events = pg.execute("select (select count(*) from raw.customers), "
                                       "(select count(*) from raw.events)").fetchone()
    assert customers == 40 and events > 0
    main(["generate", "--customers", "40", "--if-empty"])
    assert "already holds a shop: nothing generated" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["generate", "--customers", "40"])
    assert "already holds rows" in capsys.readouterr().out
