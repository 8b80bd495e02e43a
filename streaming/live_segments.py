"""The real-time segments the consumer runs: read from the manifest, swapped when it changes,
those that failed retried now and then, and those that asked for it (`reevaluate_every`)
evaluated for everyone as often as they asked.

A manifest that cannot be used (caught while dbt is still writing it, or a deploy whose segment
does not compile) leaves the running segments in place until the file changes again: a bad
deploy must not stop the stream, nor be retried on every batch.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from segops.catalog import Catalog
from segops.dbt import DbtError, compile_segments
from segops.errors import SegOpsError
from segops.files import file_version
from segops.membership import SegmentFailed
from segops.settings import Settings
from streaming.evaluator import RealtimeEvaluator

log = logging.getLogger(__name__)


class LiveSegments:
    """The evaluator of the current manifest's real-time segments, and which of them failed."""

    def __init__(self, settings: Settings, *, retry_failed_seconds: float):
        self.settings = settings
        self.retry_failed_seconds = retry_failed_seconds
        self._manifest_version: tuple[int, int] | None = None
        self._last_retry = time.monotonic()
        self._evaluated_everyone: dict[str, datetime] = {}  # segment -> the "now" it ran at
        self.evaluator = self._load()
        self.failed: dict[str, str] = dict(self.evaluator.refused)  # segment -> why

    def healthy(self) -> list[str]:
        return [name for name in self.evaluator.queries if name not in self.failed]

    def mark_failed(self, failure: SegmentFailed) -> None:
        log.error("%s; it is skipped until fixed, the other segments go on", failure)
        self.failed[failure.segment] = str(failure.error)

    def recovered(self, segment: str) -> None:
        self.failed.pop(segment, None)

    def reload_if_changed(self) -> list[str]:
        """Swap in a changed manifest's segments; the names whose SQL changed (to evaluate for
        everyone), or none when the file is unchanged or cannot be used."""
        if file_version(self.settings.manifest_path) == self._manifest_version:
            return []
        previous = self.evaluator.queries
        try:
            self.evaluator = self._load()
        except SegOpsError as problem:
            log.warning("%s; the segments stay as they were until the manifest changes again",
                        problem)
            return []
        self.failed = dict(self.evaluator.refused)
        changed = [
            name for name, query in self.evaluator.queries.items() if previous.get(name) != query
        ]
        log.info("manifest changed; re-evaluating %s", ", ".join(changed) or "nothing")
        return changed

    def due_for_retry(self) -> list[str]:
        """Failed segments still in the manifest, once every `retry_failed_seconds`."""
        retryable = [name for name in self.failed if name in self.evaluator.queries]
        if not retryable or time.monotonic() - self._last_retry < self.retry_failed_seconds:
            return []
        self._last_retry = time.monotonic()
        return retryable

    def due_for_reevaluation(self, now: datetime) -> list[str]:
        """Healthy segments whose `reevaluate_every` has passed, by the consumer's clock, since
        they were last evaluated for everyone."""
        return [
            name for name, query in self.evaluator.queries.items()
            if query.reevaluate_every is not None and name not in self.failed
            and (name not in self._evaluated_everyone
                 or now - self._evaluated_everyone[name] >= query.reevaluate_every)
        ]

    def evaluated_everyone(self, segments: list[str], now: datetime) -> None:
        for name in segments:
            self._evaluated_everyone[name] = now

    def _load(self) -> RealtimeEvaluator:
        """Read the real-time segments from the manifest, compiling them first if needed."""
        catalog = self._read_manifest()
        if any(s.compiled_sql is None for s in catalog.segments.values() if s.is_realtime):
            log.info("compiling the real-time segments (manifest has no compiled SQL yet)")
            # The in-memory target: dbt-duckdb keeps its connection open for the life of the
            # process, which would hold the warehouse's lock against every other process.
            try:
                compile_segments(self.settings)
            except DbtError:
                # dbt rewrites the manifest as its compile fails: that version has been tried.
                self._manifest_version = file_version(self.settings.manifest_path)
                raise
            catalog = self._read_manifest()
        return RealtimeEvaluator.from_catalog(catalog)

    def _read_manifest(self) -> Catalog:
        """The catalog, noting which version of the file it came from (looked at first, so a
        rewrite that lands while it is read shows as a change next time)."""
        self._manifest_version = file_version(self.settings.manifest_path)
        return Catalog.load(self.settings.manifest_path)
