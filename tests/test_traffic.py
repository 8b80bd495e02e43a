"""The demo's live traffic is skewed the way a shop's is: busy regulars, no dominant account."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime

from demo.traffic import ShopTraffic, known_customers

CUSTOMERS = 20_000


def test_the_busiest_customers_lead_but_none_dominates():
    traffic = ShopTraffic(known_customers(CUSTOMERS), seed=5, clock=lambda: datetime(2026, 6, 1))
    events = Counter(e["customer_id"] for e in itertools.islice(traffic, 300_000))
    known = sorted((n for who, n in events.items() if not who.startswith("n")), reverse=True)
    total = sum(events.values())
    assert known[0] / total < 0.005, "the heaviest customer sends well under 0.5 % of events"
    assert 0.45 < sum(known[: CUSTOMERS // 5]) / total < 0.70, "the busiest fifth lead"
    assert len(known) > CUSTOMERS // 2, "the long tail shows up too"
