"""B3: real-time evaluation time per micro-batch does not grow with the history.

Two consumers, one on a shop with ten times the events of the other (10M against 1M at full
scale), each take the same number of micro-batches of the same size of live shop traffic through
`LiveConsumer.process` on PostgreSQL (validate, store, evaluate every real-time segment for the
touched customers and those a time boundary just passed, write membership, commit). Batches
alternate between the two, so a busy moment on the machine falls on both alike. The figure is
the ratio of the median batch times.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics

from bench.harness import (
    Lab,
    compact,
    figure,
    median_steps_ms,
    percentile,
    swept_to_now,
    traffic,
)
from streaming.live_consumer import LiveConsumer
from streaming.source import Incoming
from streaming.stream_loop import ConsumerConfig

FIGURES = ("B3",)
WARM_UP = 2  # batches per consumer not counted (first connections, caches)


def batches(customers: int, size: int, seed: int):
    events = iter(traffic(customers, seed))
    while True:
        yield [Incoming(data=json.dumps(e).encode(), message_id=e["event_id"])
               for e in itertools.islice(events, size)]


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    shops = {"reference": lab.shop(scale.reference_customers),
             "history": lab.shop(scale.history_customers)}
    config = ConsumerConfig(batch_size=scale.batch_size, publish_changes=False)
    seconds: dict[str, list[float]] = {name: [] for name in shops}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in shops}
    with contextlib.ExitStack() as stack:
        consumers, feeds = {}, {}
        for name, shop in shops.items():
            settings = stack.enter_context(lab.workspace(f"evaluation-{name}", shop))
            swept_to_now(settings)
            consumers[name] = LiveConsumer(settings, config)
            stack.enter_context(consumers[name].session())  # as `LiveConsumer.run` does
            consumers[name].start()
            feeds[name] = batches(shop.customers, scale.batch_size, seed=5)
        for index in range(WARM_UP + scale.batches):
            for name, consumer in consumers.items():
                outcome = consumer.process(next(feeds[name]))
                if index >= WARM_UP:
                    seconds[name].append(outcome.seconds)
                    steps[name].append(outcome.steps)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = median["history"] / median["reference"]
    history, reference = shops["history"], shops["reference"]
    steps_ms = {name: median_steps_ms(laps) for name, laps in steps.items()}
    print(f"  {history.events:,} events: {median['history'] * 1000:,.0f} ms per batch; "
          f"{reference.events:,} events: {median['reference'] * 1000:,.0f} ms", flush=True)
    for name, by_step in steps_ms.items():
        print(f"    {name}: " + ", ".join(f"{k} {v:,.0f} ms" for k, v in by_step.items()),
              flush=True)
    return {
        "B3": figure(
            what=f"real-time evaluation per micro-batch at {compact(history.events)} events "
                 "of history",
            value=round(ratio, 3), unit=f"x the same at {compact(reference.events)} events",
            goal="<= 1.5", met=ratio <= 1.5,
            baseline=round(median["reference"] * 1000, 1), baseline_unit="ms per batch",
            summary=f"{ratio:.2f}x ({median['history'] * 1000:,.0f} ms per batch)",
            median_ms=round(median["history"] * 1000, 1),
            p90_ms=round(percentile(seconds["history"], 90) * 1000, 1),
            reference_p90_ms=round(percentile(seconds["reference"], 90) * 1000, 1),
            median_steps_ms=steps_ms,
            batch_size=scale.batch_size, batches=scale.batches,
            history_customers=history.customers, history_events=history.events,
            reference_customers=reference.customers, reference_events=reference.events,
        ),
    }
