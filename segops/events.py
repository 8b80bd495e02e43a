"""The event contract: the event types SegOps accepts and the properties each one carries.

This is its one definition. The stream's validation (`streaming/validation.py`), the demo's
synthetic shop and live traffic (`demo/`), the accepted values of the dbt source test on
`raw.events.event_type` and the reference in `docs/events.md` all follow it; tests fail when the
YAML or the reference disagrees with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

STRING = "string"
NUMBER = "number"  # a JSON number, finite and not negative (money, counts)
TIMESTAMP = "timestamp"  # RFC 3339 text with a time zone

# A property has one type wherever it appears, and it is checked on every event that carries it.
PROPERTY_TYPES: dict[str, str] = {
    "category": STRING,
    "product_id": STRING,
    "order_id": STRING,
    "channel": STRING,
    "country": STRING,
    "device": STRING,
    "path": STRING,
    "currency": STRING,
    "campaign_id": STRING,
    "email": STRING,
    "city": STRING,
    "acquisition_channel": STRING,
    "signed_up_at": TIMESTAMP,
    "price": NUMBER,
    "quantity": NUMBER,
    "order_value": NUMBER,
    "items": NUMBER,
}


IDENTIFY = "identify"


@dataclass(frozen=True)
class EventType:
    description: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


EVENT_TYPES: dict[str, EventType] = {
    "signup": EventType("A customer creates an account.", optional=("channel", "country")),
    "session_start": EventType("A visit begins.", optional=("channel", "device")),
    "page_view": EventType("A content page is shown.", optional=("path",)),
    "product_view": EventType(
        "A product page is shown.", required=("category",), optional=("product_id", "price")
    ),
    "add_to_cart": EventType(
        "A product goes into the cart.",
        required=("category",),
        optional=("product_id", "price", "quantity"),
    ),
    "checkout": EventType("The cart is checked out.", optional=("order_value",)),
    "purchase": EventType(
        "An order is paid.", required=("order_value",), optional=("order_id", "currency", "items")
    ),
    "email_open": EventType("A marketing email is opened.", optional=("campaign_id",)),
    # A profile update, not a behaviour: it sets the customer's traits (segops/customers.py),
    # and any other property is kept as an extra trait. The staging models leave it out of
    # stg_events.
    IDENTIFY: EventType(
        "A customer's traits are set (sign-up form, CRM, app); any other property is kept as "
        "an extra trait.",
        optional=("email", "country", "city", "acquisition_channel", "signed_up_at"),
    ),
}

# The envelope: every message is one JSON object with exactly these fields.
FIELDS = ("event_id", "customer_id", "event_type", "occurred_at", "properties")
REQUIRED_FIELDS = ("event_id", "customer_id", "event_type", "occurred_at")
MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_LENGTH = 128
MAX_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1)


@dataclass(frozen=True)
class Event:
    """A valid event, as the stream stores it."""

    event_id: str
    customer_id: str
    event_type: str
    occurred_at: datetime
    properties: str  # canonical JSON text


def reference_markdown() -> str:
    """The per-type table of docs/events.md, generated from the contract."""
    lines = ["| event_type | what happened | required properties | optional properties |",
             "|---|---|---|---|"]
    for name, kind in EVENT_TYPES.items():
        required, optional = (
            ", ".join(f"`{p}` ({PROPERTY_TYPES[p]})" for p in names) or "none"
            for names in (kind.required, kind.optional)
        )
        lines.append(f"| `{name}` | {kind.description} | {required} | {optional} |")
    return "\n".join(lines)
