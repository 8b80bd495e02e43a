"""`segops replay`: historical events through the stream's own path into PostgreSQL, then the
nightly job on the lake. (Replaying a file twice: test_live_stream's replay test.)"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest

from demo.traffic import event
from segops.clock import utc_now
from segops.settings import load_settings
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


@pytest.fixture
def live_state(manifest, live_dsn, monkeypatch):
    """The live state in this test's PostgreSQL database, on the real clock (the export's
    times are relative to now)."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    return load_settings()


def test_replay_stores_dead_letters_and_evaluates_like_the_stream(live_state, history, capsys):
    main(["replay", str(history)])
    out = capsys.readouterr().out
    assert "8 lines: 5 events stored, 1 already stored, 2 dead-lettered" in out
    assert scalar(live_state, "select count(*) from raw.events") == 5
    reasons = scalar(live_state, "select array_agg(reason order by message_id) "
                                 "from raw.dead_letters")
    assert len(reasons) == 2 and any("needs properties.order_value" in r for r in reasons)
    assert set(members(live_state, "recent_purchasers")) == {"ann"}
    assert set(members(live_state, "high_intent_browsers")) == {"bob"}
    assert "reconciling every segment with the nightly job" in out


def test_a_missing_file_is_a_readable_error(settings, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["replay", str(tmp_path / "nope.ndjson")])
    assert exit_.value.code == 1
    assert "no such file" in capsys.readouterr().out
