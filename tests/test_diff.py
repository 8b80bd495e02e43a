"""`segops diff` on a real Git repository made here: what a pull request's segment changes do to
membership (kept in PostgreSQL), in text, markdown and JSON."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from segops import preview
from segops.dbt import run_dbt
from segops_cli.main import main
from tests.live_helpers import NOW, started
from tests.projects import committed_project
from tests.shop import add_customer, add_event

RANKED = """
select customer_id from (
    select customer_id, rank() over (order by count(*) desc) as position
    from {{ ref('stg_events') }} group by customer_id
) where position = 1
"""
REALTIME = ("models:\n  - name: top_browser\n    config:\n      materialized: view\n"
            "      meta:\n        segment:\n          refresh: realtime\n")


@pytest.fixture
def repository(live_shop, tmp_path, monkeypatch):
    """The project committed on `main`, a shop with carts of every age in PostgreSQL, and the
    stream's membership."""
    repo = tmp_path / "repo"
    settings = committed_project(repo, monkeypatch)
    with psycopg.connect(settings.postgres_dsn) as con:
        for name, minutes in (("fresh", 5), ("twenty", 20), ("forty", 40)):
            add_customer(con, name, signed_up_at=NOW - timedelta(days=9))
            add_event(con, name, "add_to_cart", NOW - timedelta(minutes=minutes),
                      category="home", price=12.5, quantity=2)
    with started(settings):
        pass  # forty's cart is abandoned
    return repo / "dbt_project" / "models" / "segments"


def test_diff_shows_who_a_change_would_move(repository, capsys, monkeypatch):
    cart = repository / "cart_abandoners.sql"
    cart.write_text(cart.read_text().replace("interval '30 minutes'", "interval '15 minutes'"))
    (repository / "top_browser.sql").write_text(RANKED)
    (repository / "top_browser.yml").write_text(REALTIME)

    main(["diff", "--base", "main", "--format", "json"])
    diffs = {d["segment"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(diffs) == {"cart_abandoners", "top_browser"}
    carts = diffs["cart_abandoners"]
    assert (carts["status"], carts["before"]["reach"], carts["after"]["reach"]) == (
        "changed", 1, 2)
    assert (carts["enters"], carts["exits"]) == (1, 0)
    assert carts["enter_sample"][0]["customer_id"] == "twenty"
    assert carts["enter_sample"][0]["attributes"]["cart_value"] == 25.0
    assert carts["after"]["overlap"] == {}, "no other segment holds these shoppers"
    added = diffs["top_browser"]
    assert added["status"] == "added" and added["before"] is None
    assert "ranks or compares customers" in added["after"]["refused"]

    compiled = []
    monkeypatch.setattr(preview, "run_dbt", lambda *args, **kwargs: compiled.append(args[1])
                        or run_dbt(*args, **kwargs))
    main(["diff", "--base", "main", "--format", "markdown"])
    markdown = capsys.readouterr().out
    assert "#### `cart_abandoners` (changed)" in markdown
    assert "| reach | 1 | 2 |" in markdown and "`twenty`" in markdown
    assert "**Refused as real-time:**" in markdown
    assert compiled == [], "the same sources a second time: nothing goes through dbt"

    cart.write_text(cart.read_text().replace("interval '15 minutes'", "interval '45 minutes'"))
    main(["diff", "--base", "main", "--format", "json"])
    carts = {d["segment"]: d for d in json.loads(capsys.readouterr().out)}["cart_abandoners"]
    assert (carts["after"]["reach"], carts["exits"]) == (0, 1), "the edit is what is evaluated"
    assert [command[2] for command in compiled] == [cart.read_text(), RANKED], (
        "an edit compiles the working tree again, never the base version")


def test_a_segment_that_does_not_compile_fails_the_diff_with_dbt_s_words(repository, capsys):
    (repository / "cart_abandoners.sql").write_text("select * from {{ ref('no_such_model') }}")
    with pytest.raises(SystemExit) as exit_code:
        main(["diff", "--base", "main"])
    assert exit_code.value.code == 1
    said = capsys.readouterr().out
    assert "cart_abandoners.sql" in said and "no_such_model" in said
