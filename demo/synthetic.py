"""A deterministic synthetic online shop: customers and their events, at any scale.

Everything is drawn as numpy arrays from one seeded generator and handed to DuckDB as Arrow,
which builds the strings and JSON in SQL: 1M customers / 10M events load in well under two
minutes on two cores. The events have the same shape the Pub/Sub stream carries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from demo.shop import CATEGORIES, CHANNELS, COUNTRIES, DEVICES, PATHS
from segops.extensions import duckdb_config
from segops.live_copy import copy_catalog_to_postgres
from segops.schema import ensure_schema

# What one session holds, on average: a start, 1 + Poisson(3.5) views, and a cart that is
# sometimes checked out and bought.
MEAN_VIEWS = 4.5
P_CART, P_CHECKOUT, P_PURCHASE = 0.3, 0.6, 0.85
EMAIL_OPENS_PER_CUSTOMER = 0.5
RECENT_SHARE = 0.04  # sessions placed in the last two hours, so real-time segments have members


@dataclass(frozen=True)
class GenerationSummary:
    customers: int
    events: int
    seconds: float


# Customers generated at a time: a chunk's arrays and in-memory tables (some ten million events)
# take a few GiB, where ten million customers at once outgrow 24.
CHUNK_CUSTOMERS = 1_000_000


def customer_ids_width(customers: int) -> int:
    return max(7, len(str(customers)))


def customer_id(index: int, customers: int) -> str:
    """The id the generator gives customer number `index` (1-based) of `customers`."""
    return f"c{index:0{customer_ids_width(customers)}d}"


def generate(
    con: duckdb.DuckDBPyConnection,
    *,
    customers: int,
    now: datetime,
    seed: int = 7,
    days: int = 120,
    events_per_customer: float = 10.0,
    first: int = 1,
    of: int | None = None,
    first_event: int = 1,
) -> GenerationSummary:
    """Replace raw.customers and raw.events with a fresh synthetic shop anchored at `now`: or,
    for a shop generated in parts, its customers `first` to `first + customers - 1` of `of`,
    their events numbered from `first_event`."""
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    now_us = np.int64(int(now.timestamp() * 1e6)) if now.tzinfo else _naive_us(now)
    horizon_us = np.int64(days * 86_400_000_000)

    people = _customers(rng, customers, now_us, horizon_us, first)
    sessions = _sessions(rng, people, customers, now_us, events_per_customer)
    events = _session_events(rng, sessions, now_us)
    extras = _signups_and_email(rng, people, customers, now_us)

    ensure_schema(con)
    con.execute("delete from raw.events")
    con.execute("delete from raw.customers")
    con.execute("delete from raw.customer_traits")
    width = customer_ids_width(of or customers)
    con.register("_people", pa.table(people))
    con.execute(
        f"""
        insert into raw.customers
            (customer_id, email, country, city, acquisition_channel, signed_up_at)
        select
            'c' || lpad(cast(idx as varchar), {width}, '0'),
            'customer' || cast(idx as varchar) || '@example.com',
            $countries[country + 1],
            $cities[country + 1][city + 1],
            $channels[channel + 1],
            make_timestamp(signed_up_us)
        from _people order by idx
        """,
        {
            "countries": list(COUNTRIES),
            "cities": [cities for _, cities in COUNTRIES.values()],
            "channels": CHANNELS,
        },
    )
    con.unregister("_people")
    all_events = {k: np.concatenate([events[k], extras[k]]) for k in events}
    order = np.argsort(all_events["at_us"], kind="stable")
    con.register("_events", pa.table({k: v[order] for k, v in all_events.items()}))
    con.execute(
        f"""
        insert into raw.events (event_id, customer_id, event_type, occurred_at, properties,
                                ingested_at)
        with numbered as (
            select *, row_number() over () + {first_event - 1} as n from _events
        )
        select
            'e' || lpad(cast(n as varchar), 10, '0'),
            'c' || lpad(cast(customer as varchar), {width}, '0'),
            $types[kind + 1],
            make_timestamp(at_us),
            case kind
                when {SIGNUP} then json_object(
                    'channel', $channels[item % 5 + 1], 'country', $countries[item // 5 + 1])
                when {SESSION_START} then json_object(
                    'channel', $channels[item % 5 + 1], 'device', $devices[item // 5 + 1])
                when {PAGE_VIEW} then json_object('path', $paths[item + 1])
                when {PRODUCT_VIEW} then json_object(
                    'product_id', product_id, 'category', category_name, 'price', price)
                when {ADD_TO_CART} then json_object(
                    'product_id', product_id, 'category', category_name, 'price', price,
                    'quantity', quantity)
                when {CHECKOUT} then json_object('order_value', order_value)
                when {PURCHASE} then json_object(
                    'order_id', 'o' || cast(n as varchar), 'order_value', order_value,
                    'currency', 'USD', 'items', quantity)
                when {EMAIL_OPEN} then json_object(
                    'campaign_id', 'cmp' || lpad(cast(item as varchar), 3, '0'))
            end,
            make_timestamp(at_us)
        from (
            select *,
                $categories[category + 1] as category_name,
                substr($categories[category + 1], 1, 3) || '-'
                    || lpad(cast(item as varchar), 4, '0') as product_id,
                round(price * quantity, 2) as order_value
            from numbered
        )
        order by n
        """,
        {
            "types": EVENT_KINDS,
            "channels": CHANNELS,
            "countries": list(COUNTRIES),
            "devices": DEVICES,
            "paths": PATHS,
            "categories": CATEGORIES,
        },
    )
    con.unregister("_events")
    con.execute("checkpoint")
    count = con.execute("select count(*) from raw.events").fetchone()[0]
    return GenerationSummary(customers=customers, events=count,
                             seconds=time.monotonic() - started)


# The shop's event types by number, as the arrays carry them; the case in `generate` builds
# each one's properties, which tests check against the tracking plan.
EVENT_KINDS = ["signup", "session_start", "page_view", "product_view", "add_to_cart",
               "checkout", "purchase", "email_open"]
SIGNUP, SESSION_START, PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT, PURCHASE, EMAIL_OPEN = (
    range(len(EVENT_KINDS))
)


def generate_into_postgres(dsn: str, *, customers: int, seed: int = 7, **shop
                           ) -> GenerationSummary:
    """`generate` into the empty live tables of PostgreSQL at `dsn`: generated in memory, where
    DuckDB builds it in seconds, then copied through PostgreSQL's COPY; a shop of more than
    CHUNK_CUSTOMERS customers a chunk of them at a time."""
    started = time.monotonic()
    events = 0
    for chunk, first in enumerate(range(1, customers + 1, CHUNK_CUSTOMERS)):
        with duckdb.connect(config=duckdb_config()) as con:
            part = generate(con, customers=min(CHUNK_CUSTOMERS, customers - first + 1),
                            seed=seed + chunk, first=first, of=customers,
                            first_event=events + 1, **shop)
            copy_catalog_to_postgres(con, "memory", dsn, adding=chunk > 0)
        events += part.events
    return GenerationSummary(customers=customers, events=events,
                             seconds=time.monotonic() - started)


def _naive_us(moment: datetime) -> np.int64:
    return np.int64((moment - datetime(1970, 1, 1)) // timedelta(microseconds=1))


def _customers(rng, n: int, now_us, horizon_us, first: int) -> dict[str, np.ndarray]:
    shares = np.array([share for share, _ in COUNTRIES.values()])
    country = rng.choice(len(COUNTRIES), size=n, p=shares / shares.sum())
    city_counts = np.array([len(cities) for _, cities in COUNTRIES.values()])
    city = (rng.random(n) * city_counts[country]).astype(np.int64)
    # Sign-ups spread over the horizon, a little denser recently (the shop is growing).
    signed_up_us = now_us - (horizon_us * rng.random(n) ** 1.3).astype(np.int64)
    return {
        "idx": np.arange(first, first + n, dtype=np.int64),
        "country": country.astype(np.int64),
        "city": city,
        "channel": rng.integers(0, len(CHANNELS), n),
        "signed_up_us": signed_up_us,
        "activity": rng.lognormal(0.0, 1.4, n),  # a few very active, a long tail
    }


def _sessions(rng, people, n: int, now_us, events_per_customer: float) -> dict[str, np.ndarray]:
    per_session = 1 + MEAN_VIEWS + P_CART * (1 + P_CHECKOUT * (1 + P_PURCHASE))
    per_customer = max(events_per_customer - 1 - EMAIL_OPENS_PER_CUSTOMER, 0) / per_session
    weights = people["activity"] / people["activity"].mean()
    counts = rng.poisson(weights * per_customer)
    owner = np.repeat(np.arange(n), counts)
    total = owner.size
    signed_up = people["signed_up_us"][owner]
    # Activity decays after sign-up: most sessions come early, some customers go quiet.
    span = (now_us - signed_up).astype(np.float64)
    start = signed_up + (span * rng.random(total) ** 1.5).astype(np.int64)
    recent = rng.random(total) < RECENT_SHARE
    start[recent] = now_us - rng.integers(60_000_000, 7_200_000_000, int(recent.sum()))
    start = np.maximum(start, signed_up)
    views = 1 + rng.poisson(MEAN_VIEWS - 1, total)
    cart = rng.random(total) < P_CART
    checkout = cart & (rng.random(total) < P_CHECKOUT)
    purchase = checkout & (rng.random(total) < P_PURCHASE)
    return {
        "customer": people["idx"][owner],
        "start": start,
        "views": views,
        "cart": cart,
        "checkout": checkout,
        "purchase": purchase,
        "category": rng.integers(0, len(CATEGORIES), total),
        "channel": rng.integers(0, len(CHANNELS), total),
        "device": rng.integers(0, len(DEVICES), total),
    }


def _session_events(rng, s, now_us) -> dict[str, np.ndarray]:
    length = 1 + s["views"] + s["cart"] + s["checkout"] + s["purchase"]
    session = np.repeat(np.arange(length.size), length)
    first = np.cumsum(length) - length
    position = np.arange(session.size) - first[session]
    views = s["views"][session]
    kind = np.full(session.size, PRODUCT_VIEW, dtype=np.int64)
    kind[position == 0] = SESSION_START
    browsing = (position >= 1) & (position <= views)
    kind[browsing & (rng.random(session.size) < 0.2)] = PAGE_VIEW
    after = position - views  # 1: cart, 2: checkout, 3: purchase
    kind[after == 1] = ADD_TO_CART
    kind[after == 2] = CHECKOUT
    kind[after == 3] = PURCHASE
    # Seconds to minutes between a session's events, in order.
    gaps = rng.integers(3_000_000, 120_000_000, session.size)
    gaps[position == 0] = 0
    elapsed = np.cumsum(gaps)
    at_us = s["start"][session] + elapsed - elapsed[first][session]

    category = s["category"][session].copy()
    strays = (kind == PRODUCT_VIEW) & (rng.random(session.size) < 0.2)
    category[strays] = rng.integers(0, len(CATEGORIES), int(strays.sum()))
    item = rng.integers(0, 500, session.size)
    price = np.round(rng.lognormal(3.3, 0.8, session.size), 2)
    quantity = rng.integers(1, 4, session.size)
    # Checkout and purchase carry the cart's item, price and quantity.
    cart_row = first + s["views"] + 1
    carried = after >= 1
    for column in (item, price, quantity, category):
        column[carried] = column[cart_row[session[carried]]]
    item[kind == PAGE_VIEW] %= len(PATHS)
    starts = kind == SESSION_START
    item[starts] = s["channel"][session[starts]] + 5 * s["device"][session[starts]]
    keep = at_us <= now_us
    return {
        "customer": s["customer"][session][keep],
        "kind": kind[keep],
        "at_us": at_us[keep],
        "category": category[keep],
        "item": item[keep],
        "price": price[keep],
        "quantity": quantity[keep],
    }


def _signups_and_email(rng, people, n: int, now_us) -> dict[str, np.ndarray]:
    opens = rng.poisson(EMAIL_OPENS_PER_CUSTOMER * n)
    reader = rng.integers(0, n, opens)
    signed_up = people["signed_up_us"][reader]
    opened_at = signed_up + ((now_us - signed_up) * rng.random(opens)).astype(np.int64)
    total = n + opens
    return {
        "customer": np.concatenate([people["idx"], people["idx"][reader]]),
        "kind": np.concatenate([np.full(n, SIGNUP), np.full(opens, EMAIL_OPEN)]),
        "at_us": np.concatenate([people["signed_up_us"], opened_at]),
        "category": np.zeros(total, dtype=np.int64),
        "item": np.concatenate(
            [people["channel"] + 5 * people["country"], rng.integers(0, 40, opens)]
        ),
        "price": np.zeros(total),
        "quantity": np.ones(total, dtype=np.int64),
    }
