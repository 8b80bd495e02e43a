"""A scripted real-time act for the demo: shoppers whose every move changes their segments.

It runs the streaming consumer in this process, publishes a short story to Pub/Sub and prints
each enter and exit as the consumer commits it, with the latency from the event that caused it
(or, for changes that time alone makes, from the moment the boundary passed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.console import Console

from demo.producer import publish
from demo.traffic import event
from segops.clock import utc_now
from segops.errors import SegOpsError
from segops.live_state import read_live_state
from segops.pubsub import ensure_pubsub, request_publisher, subscription_path
from segops.settings import Settings
from streaming.live_consumer import LiveConsumer, default_consumer_id
from streaming.source import PubSubSource
from streaming.stream_loop import ConsumerConfig


@dataclass(frozen=True)
class Beat:
    """One step of the story: what happens, the events it publishes, what to wait for."""

    narration: str
    events: Callable[[datetime], list[dict]]
    expect: list[tuple[str, str, str]]  # (customer, segment, enter|exit)
    boundary: Callable[[datetime], datetime] | None = None  # when time alone causes it


def _views(customer: str, category: str, count: int) -> Callable[[datetime], list[dict]]:
    return lambda now: [
        event(customer, "product_view", now, product_id=f"{category[:3]}-{i:04d}",
              category=category, price=49.0 + i)
        for i in range(count)
    ]


CART_DELAY = timedelta(minutes=30)
SETTLE = timedelta(seconds=3)

STORY = [
    Beat(
        "Ada signs up.",
        lambda now: [event("ada", "signup", now, channel="social", country="GB")],
        [("ada", "new_signups_no_purchase", "enter")],
    ),
    Beat(
        "Ada looks at three espresso machines.",
        _views("ada", "home", 3),
        [("ada", "high_intent_browsers", "enter")],
    ),
    Beat(
        "Ada puts one in her cart (29m57s ago, say) and wanders off.",
        lambda now: [event("ada", "add_to_cart", now - CART_DELAY + SETTLE,
                           product_id="hom-0002", category="home", price=51.0, quantity=1)],
        [("ada", "cart_abandoners", "enter")],
        boundary=lambda now: now + SETTLE,
    ),
    Beat(
        "Ada comes back and buys it.",
        lambda now: [event("ada", "purchase", now, order_id="o-ada-1", order_value=51.0,
                           currency="USD", items=1)],
        [("ada", "cart_abandoners", "exit"), ("ada", "new_signups_no_purchase", "exit"),
         ("ada", "recent_purchasers", "enter")],
    ),
    Beat(
        "Bob glances at two books: not enough intent yet.",
        _views("bob", "books", 2),
        [],
    ),
    Beat(
        "Bob looks at a third book.",
        _views("bob", "books", 1),
        [("bob", "high_intent_browsers", "enter")],
    ),
]


def tell(settings: Settings, console: Console, timeout: float = 30.0) -> bool:
    """Publish the story through Pub/Sub and narrate the changes; True if all happened."""
    ensure_pubsub(settings)
    config = ConsumerConfig(batch_wait_seconds=0.05, tick_seconds=0.5,
                            consumer_id=default_consumer_id())
    committed = threading.Event()
    consumer = LiveConsumer(settings, config, on_commit=lambda *_: committed.set())
    worker = threading.Thread(
        target=consumer.run, args=(PubSubSource(subscription_path(settings)),), daemon=True
    )
    worker.start()
    publisher = request_publisher()
    while not committed.wait(0.05):  # its first round: every segment evaluated, streaming
        if not worker.is_alive():
            raise SegOpsError("the consumer stopped before the story began; its log says why")
    last_change = _last_change_id(settings)
    complete = True
    try:
        for beat in STORY:
            console.print(f"\n[bold]{beat.narration}[/bold]")
            now = utc_now()
            publish(settings, beat.events(now), publisher=publisher)
            started = beat.boundary(now) if beat.boundary else None
            expected = set(beat.expect)
            deadline = time.monotonic() + timeout
            while expected and time.monotonic() < deadline:
                for change_id, customer, segment, change, recorded_at in _changes_since(
                    settings, last_change
                ):
                    last_change = change_id
                    if (customer, segment, change) not in expected:
                        continue
                    expected.discard((customer, segment, change))
                    since = (recorded_at - (started or now)).total_seconds() * 1000
                    latency = (
                        f"{since:,.0f} ms after the 30-minute mark, with no new event"
                        if started
                        else f"{since:,.0f} ms after publishing"
                    )
                    arrow = "[green]→ enters[/green]" if change == "enter" else "[red]← exits[/red]"
                    console.print(f"  {customer} {arrow} {segment}  ({latency})")
                time.sleep(0.05)
            if expected:
                complete = False
                console.print(f"  [red]not seen within {timeout:.0f}s:[/red] {sorted(expected)}")
            if not beat.expect:
                time.sleep(1.0)
                console.print("  (no change, as expected)")
    finally:
        consumer.stop()
        worker.join(timeout=30)
    return complete


def _last_change_id(settings: Settings) -> int:
    with read_live_state(settings.postgres_dsn) as con:
        return con.execute(
            "select coalesce(max(change_id), 0) from segops.segment_membership_changes"
        ).fetchone()[0]


def _changes_since(settings: Settings, change_id: int) -> list[tuple]:
    with read_live_state(settings.postgres_dsn) as con:
        return con.execute(
            f"""
            select change_id, customer_id, segment, change, recorded_at
            from segops.segment_membership_changes where change_id > {int(change_id)}
            order by change_id
            """
        ).fetchall()
