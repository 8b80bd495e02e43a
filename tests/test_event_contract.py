"""The event contract: validation against it (good events pass, each kind of bad input gets a
reason, nothing raises), and every other place that follows it agrees with it."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from demo.traffic import ShopTraffic, known_customers
from segops.events import MAX_MESSAGE_BYTES, Event, reference_markdown
from segops.settings import DBT_PROJECT_DIR, PROJECT_ROOT
from segops.tracking_plan import load_plan
from streaming.validation import Rejected, validate

NOW = datetime(2026, 6, 1, 12, 0, 0)
PLAN = load_plan()
GOOD = {
    "event_id": "e1",
    "customer_id": "c1",
    "event_type": "product_view",
    "occurred_at": "2026-06-01T11:59:00Z",
    "properties": {"category": "books", "product_id": "boo-1", "price": 12.5},
}


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def test_a_good_event_passes_with_utc_time():
    result = validate(encode({**GOOD, "occurred_at": "2026-06-01T13:59:00+02:00"}), NOW, PLAN)
    assert isinstance(result, Event)
    assert result.occurred_at == datetime(2026, 6, 1, 11, 59)
    assert json.loads(result.properties)["category"] == "books"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty payload"),
        (b"\xff\xfe{", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            encode({k: v for k, v in GOOD.items() if k != "customer_id"}),
            "missing field(s): customer_id",
        ),
        (encode({**GOOD, "extra": 1}), "unexpected field(s): extra"),
        (encode({**GOOD, "customer_id": 42}), "customer_id must be a non-empty string"),
        (encode({**GOOD, "event_id": ""}), "event_id must be a non-empty string"),
        (encode({**GOOD, "occurred_at": "yesterday"}), "not RFC 3339"),
        (encode({**GOOD, "occurred_at": "2026-06-01T11:00:00"}), "with a time zone"),
        (encode({**GOOD, "occurred_at": "2026-13-01T11:00:00Z"}), "not a valid RFC 3339"),
        (encode({**GOOD, "occurred_at": "2027-06-01T11:00:00Z"}), "in the future"),
        (encode({**GOOD, "occurred_at": "1970-01-01T00:00:00Z"}), "before 2000"),
        (encode({**GOOD, "properties": [1]}), "properties must be an object"),
        (encode({**GOOD, "properties": {"price": "12"}}), "needs properties.category"),
        (encode({**GOOD, "properties": {"category": "x", "price": "12"}}), "price must be a"),
        (encode({**GOOD, "properties": {"category": 7}}), "category must be a string"),
        (
            encode({**GOOD, "event_type": "purchase", "properties": {}}),
            "needs properties.order_value",
        ),
        (encode({**GOOD, "customer_id": "x" * 500}), "longer than 128"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "oversized"),
        (encode({**GOOD, "customer_id": "'; drop table raw.events; --"}), None),
    ],
)
def test_bad_input_is_rejected_with_a_reason(payload, reason):
    result = validate(payload, NOW, PLAN)
    if reason is None:
        assert isinstance(result, Event), "SQL-looking text is data, stored as is"
        return
    assert isinstance(result, Rejected)
    assert reason in result.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_no_bytes_make_validation_raise(payload):
    assert isinstance(validate(payload, NOW, PLAN), Event | Rejected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "other"]), json_values, max_size=7))
def test_no_json_object_makes_validation_raise(body):
    assert isinstance(validate(json.dumps(body).encode(), NOW, PLAN), Event | Rejected)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in GOOD}))
def test_mutated_good_events_never_raise(partial):
    body = json.dumps({**GOOD, **partial}).encode()
    assert isinstance(validate(body, NOW, PLAN), Event | Rejected)


def test_the_dbt_source_accepts_exactly_the_contracts_event_types():
    sources = yaml.safe_load((DBT_PROJECT_DIR / "models" / "staging" / "_sources.yml").read_text())
    (raw,) = sources["sources"]
    (events,) = [table for table in raw["tables"] if table["name"] == "events"]
    (event_type,) = [column for column in events["columns"] if column["name"] == "event_type"]
    (test,) = event_type["data_tests"]
    assert test["accepted_values"]["arguments"]["values"] == list(PLAN.events)


def test_the_event_reference_is_the_contracts():
    reference = (PROJECT_ROOT / "docs" / "events.md").read_text()
    assert reference_markdown(PLAN) in reference, (
        "docs/events.md is out of date: paste `python -m segops.events` into it"
    )


def test_the_demo_traffic_sends_what_the_contract_declares():
    traffic = iter(ShopTraffic(known_customers(1000), seed=3, clock=lambda: NOW))
    seen = set()
    for _ in range(2000):
        body = next(traffic)
        declared = PLAN.events[body["event_type"]]
        assert set(declared.required) <= set(body["properties"]), body
        assert set(body["properties"]) <= {*declared.required, *declared.optional}, body
        assert isinstance(validate(json.dumps(body).encode(), NOW, PLAN), Event), body
        seen.add(body["event_type"])
    assert seen == set(PLAN.events) - {"signup", "identify"}, (
        "live traffic is shoppers already signed up, whose profiles the shop holds")
