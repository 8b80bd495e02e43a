"""`segops replay`: historical events through the stream's own path, then the nightly job."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest

from demo.traffic import event
from segops.clock import utc_now
from segops_cli.main import main
from tests.stream_helpers import members, scalar

NOW = utc_now().replace(microsecond=0)


@pytest.fixture
def history(tmp_path):
    """A gzipped NDJSON export: a shopper's week, a repeated line, and two bad lines."""
    purchase = event("ann", "purchase", NOW - timedelta(days=2), order_value=50.0, order_id="o1")
    lines = [
        json.dumps(event("ann", "signup", NOW - timedelta(days=5))),
        json.dumps(purchase),
        json.dumps(purchase),  # exported twice upstream
        *(json.dumps(event("bob", "product_view", NOW - timedelta(minutes=m), category="books",
                           price=12.0)) for m in (30, 20, 10)),
        "not json at all",
        json.dumps({"event_id": "x1", "customer_id": "cy", "event_type": "purchase",
                    "occurred_at": NOW.isoformat() + "Z", "properties": {}}),
        "",
    ]
    path = tmp_path / "export.ndjson.gz"
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")
    return path


def snapshot(settings) -> tuple:
    return tuple(
        scalar(settings, f"select count(*) from {table}")
        for table in ("raw.events", "raw.dead_letters", "segops.segment_membership",
                      "segops.segment_membership_changes")
    )


def test_replay_stores_dead_letters_and_evaluates_like_the_stream(warehouse, history, capsys):
    main(["replay", str(history)])
    out = capsys.readouterr().out
    assert "8 lines: 5 events stored, 1 already stored, 2 dead-lettered" in out
    assert scalar(warehouse, "select count(*) from raw.events") == 5
    reasons = scalar(warehouse, "select list(reason order by message_id) from raw.dead_letters")
    assert len(reasons) == 2 and any("needs properties.order_value" in r for r in reasons)
    assert set(members(warehouse, "recent_purchasers")) == {"ann"}
    assert set(members(warehouse, "high_intent_browsers")) == {"bob"}
    assert "reconciling every segment with the nightly job" in out


def test_replaying_the_same_file_twice_changes_nothing(warehouse, history):
    main(["replay", str(history)])
    first = snapshot(warehouse)
    main(["replay", str(history)])
    assert snapshot(warehouse) == first


def test_a_missing_file_is_a_readable_error(warehouse, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["replay", str(tmp_path / "nope.ndjson")])
    assert exit_.value.code == 1
    assert "no such file" in capsys.readouterr().out
