"""One consumer on PostgreSQL in a process of its own, as replicas run, for B1, B2 and B8: it
notes each batch's commit (wall time, messages, when its work began, where its time went) and
each message's publish → commit latency, and writes them to the JSON file it is given when it
stops (SIGTERM drains, then writes).

    python -m bench.live_consumer OUT.json   (settings from SEGOPS_* as for `segops stream`)
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from segops.clock import utc_now
from segops.pubsub import subscription_path
from segops.settings import load_settings
from streaming.live_consumer import LiveConsumer, default_consumer_id
from streaming.source import PubSubSource
from streaming.stream_loop import ConsumerConfig


def main(out: Path) -> None:
    settings = load_settings()
    commits: list[tuple[float, int, float]] = []  # (commit time, messages, work began)
    latencies: list[tuple[float, float]] = []  # (publish time, ms to commit)
    steps: list[tuple[float, dict[str, float]]] = []  # (commit time, BatchOutcome.steps)

    def on_commit(batch, outcome) -> None:
        committed = utc_now()
        if batch:
            now = time.time()
            commits.append((now, len(batch), now - outcome.seconds))
            steps.append((now, outcome.steps))
        latencies.extend(((m.publish_time - committed).total_seconds() + time.time(),
                          (committed - m.publish_time).total_seconds() * 1000)
                         for m in batch if m.publish_time)

    consumer = LiveConsumer(settings, ConsumerConfig(consumer_id=default_consumer_id()),
                            on_commit=on_commit)
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    consumer.run(PubSubSource(subscription_path(settings)))
    out.write_text(json.dumps({"commits": commits, "latencies": latencies,
                                       "steps": steps}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
