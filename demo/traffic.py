"""Live shop traffic: interleaved shopper sessions that browse, add to cart, buy or abandon."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist

from demo.shop import CATEGORIES, CHANNELS, DEVICES, PATHS
from demo.synthetic import customer_id

# sigma of the customers' lognormal activity (see known_customers)
ACTIVITY_SPREAD = 1.0


def rfc3339(moment: datetime) -> str:
    """Naive UTC datetime as an RFC 3339 string with a Z."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(customer_id: str, event_type: str, at: datetime, **properties: object) -> dict:
    """One event in the wire shape Pub/Sub carries."""
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer_id,
        "event_type": event_type,
        "occurred_at": rfc3339(at),
        "properties": properties,
    }


@dataclass
class _Session:
    customer_id: str
    category: str
    steps: list[tuple[str, dict]] = field(default_factory=list)


class ShopTraffic:
    """An endless, seeded stream of plausible events, `concurrency` shoppers at a time."""

    def __init__(
        self,
        customer_ids: Callable[[random.Random], str],
        *,
        seed: int = 11,
        concurrency: int = 200,
        clock: Callable[[], datetime],
    ):
        self.rng = random.Random(seed)
        self.customer_ids = customer_ids
        self.concurrency = concurrency
        self.clock = clock
        self.sessions: list[_Session] = []

    def __iter__(self) -> Iterator[dict]:
        while True:
            while len(self.sessions) < self.concurrency:
                self.sessions.append(self._new_session())
            index = self.rng.randrange(len(self.sessions))
            session = self.sessions[index]
            event_type, properties = session.steps.pop(0)
            if not session.steps:
                self.sessions[index] = self.sessions[-1]
                self.sessions.pop()
            yield event(session.customer_id, event_type, self.clock(), **properties)

    def _new_session(self) -> _Session:
        rng = self.rng
        category = rng.choice(CATEGORIES)
        session = _Session(customer_id=self.customer_ids(rng), category=category)
        steps = session.steps
        steps.append(("session_start", {"channel": rng.choice(CHANNELS),
                                        "device": rng.choice(DEVICES)}))
        if rng.random() < 0.05:
            steps.append(("email_open", {"campaign_id": f"cmp{rng.randrange(40):03d}"}))
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.3:
                steps.append(("page_view", {"path": rng.choice(PATHS)}))
            browsed = category if rng.random() < 0.8 else rng.choice(CATEGORIES)
            steps.append(("product_view", _product(rng, browsed)))
        if rng.random() < 0.3:
            item = _product(rng, category)
            quantity = rng.randint(1, 3)
            steps.append(("add_to_cart", {**item, "quantity": quantity}))
            if rng.random() < 0.5:
                order_value = round(item["price"] * quantity, 2)
                steps.append(("checkout", {"order_value": order_value}))
                if rng.random() < 0.85:
                    steps.append(("purchase", {"order_id": f"o{rng.getrandbits(40):x}",
                                               "order_value": order_value, "currency": "USD",
                                               "items": quantity}))
        return session


def _product(rng: random.Random, category: str) -> dict:
    return {
        "product_id": f"{category[:3]}-{rng.randrange(500):04d}",
        "category": category,
        "price": round(rng.lognormvariate(3.3, 0.8), 2),
    }


def known_customers(count: int, new_share: float = 0.01,
                    spread: float = ACTIVITY_SPREAD) -> Callable[[random.Random], str]:
    """Pick ids of the generated shop's customers for new sessions, busy customers more often,
    and now and then a customer the warehouse has never seen.

    A customer's activity is lognormal with sigma = `spread`, and a session picks its customer
    in proportion to it: with customers ranked by activity, the picked rank's quantile is then
    cdf(z - sigma) for a standard normal z. At sigma 1 the busiest fifth of customers start
    about 56 % of sessions and the busiest hundredth 9 %, while no single customer starts more
    than 0.2 % at 20,000 customers (0.01 % at a million): busy regulars, not the several per
    cent a power law gives one account, which in a real shop is a bot that tracking filters
    out.
    """
    quantile = NormalDist().cdf

    def pick(rng: random.Random) -> str:
        if rng.random() < new_share:
            return f"n{rng.getrandbits(48):012x}"
        rank = int(count * quantile(rng.gauss(0.0, 1.0) - spread))
        return customer_id(1 + min(rank, count - 1), count)

    return pick
