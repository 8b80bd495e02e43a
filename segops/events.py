"""The event envelope every message shares, and the event as the stream stores it.

The event types and their properties are the shop's own, in its tracking plan
(`segops/tracking_plan.py`, `tracking_plan.yml`); this module holds what no plan changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from segops.tracking_plan import TrackingPlan, load_plan

# A profile update, not a behaviour: it sets the customer's traits (segops/customers.py), and
# any property the plan does not name is kept as an extra trait.
IDENTIFY = "identify"

# Every message is one JSON object with exactly these fields.
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
    # What the plan says is wrong with it, where the plan's policy lets it in: (kind, detail).
    violations: tuple[tuple[str, str], ...] = ()


def reference_markdown(plan: TrackingPlan) -> str:
    """The per-type table of docs/events.md, generated from the plan."""
    lines = ["| event_type | what happened | required properties | optional properties |",
             "|---|---|---|---|"]
    for name, kind in plan.events.items():
        required, optional = (
            ", ".join(f"`{p}` ({_described(kind.properties[p])})" for p in names) or "none"
            for names in (kind.required, kind.optional)
        )
        description = " ".join(kind.description.split())
        lines.append(f"| `{name}` | {description} | {required} | {optional} |")
    return "\n".join(lines)


def _described(prop) -> str:
    if prop.values:
        return f"{prop.type}: {', '.join(map(str, prop.values))}"
    return prop.type


if __name__ == "__main__":
    print(reference_markdown(load_plan()))
