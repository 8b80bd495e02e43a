"""Replay and backfill: historical events from an NDJSON file through the stream's own path.

Each line becomes a message for the consumer's `process`, so validation, dedupe on the event's
key, dead letters and real-time evaluation are exactly the stream's. A line's message id is the
file name and line number, so a bad line replayed twice is dead-lettered once, as a good one is
stored once.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from segops.errors import SegOpsError
from segops.heartbeat import REPLAY_CONSUMER_ID
from segops.settings import Settings
from streaming.live_consumer import LiveConsumer
from streaming.source import Incoming
from streaming.stream_loop import ConsumerConfig

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ReplayReport:
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    enters: int = 0
    exits: int = 0


def open_events(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the lines, the raw file whose position measures progress); gzip by its magic bytes."""
    if not path.is_file():
        raise SegOpsError(f"no such file: {path}")
    raw = path.open("rb")
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw), raw
    raw.seek(0)
    return raw, raw


def batches(path: Path, lines: BinaryIO, size: int) -> Iterator[list[Incoming]]:
    batch: list[Incoming] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        batch.append(Incoming(data=line, message_id=f"replay:{path.name}:{number}"))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(
    settings: Settings,
    path: Path,
    *,
    batch_size: int = 5_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Send every line of `path` through the stream's path; `on_progress(bytes_read, total)`."""
    lines, raw = open_events(path)
    total = path.stat().st_size
    # Its changes are published by the streaming consumer's change feed, one publisher per
    # source keeping the per-customer order.
    config = ConsumerConfig(consumer_id=REPLAY_CONSUMER_ID, publish_changes=False)
    consumer = LiveConsumer(settings, config)
    report = ReplayReport()
    with raw, consumer.session():
        consumer.start()
        consumer.catch_up()  # what a new segment needs, before the file's batches come
        for batch in batches(path, lines, batch_size):
            outcome = consumer.process(batch)
            report.lines += outcome.received
            report.stored += outcome.stored
            report.duplicates += outcome.duplicates
            report.dead_lettered += outcome.dead_lettered
            report.enters += sum(delta.enters for delta in outcome.deltas)
            report.exits += sum(delta.exits for delta in outcome.deltas)
            if on_progress:
                on_progress(raw.tell(), total)
    return report
