"""Shared pieces of the fault suite: sizes, a consumer process, the tally, the results table.

`make chaos` runs the suite at full size (SEGOPS_CHAOS_SCALE=full) and writes
bench/results/chaos.json; `make test` runs the same scenarios small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg

from segops.catalog import Catalog
from segops.clock import set_session_now
from segops.live_scope import ScopeEngine
from segops.membership import stage_found
from streaming.evaluator import RealtimeEvaluator
from tests.stream_helpers import rows

SCALE = os.environ.get("SEGOPS_CHAOS_SCALE", "small")
RESULTS: dict[str, dict] = {}


def sized(small, full):
    """The small figure in `make test`, the full one in `make chaos`."""
    return full if SCALE == "full" else small


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.25) -> float:
    """Poll `condition` until true; the seconds it took. Fails naming `what` on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def wait_for_count(count: Callable[[], int], target: int, what: str, *, stall: float,
                   keep_going: Callable[[], bool] = lambda: True,
                   interval: float = 1.0) -> float:
    """Poll `count` until it reaches `target`; the seconds it took.

    Fails only when the count stops rising for `stall` seconds: a backlog of any size is fine
    while it moves (the emulator hands a killed consumer's leases back over many minutes), a
    stall is what a loss looks like. Returns early once `keep_going()` is false.
    """
    started = last_rise = time.monotonic()
    best = -1
    while keep_going():
        current = count()
        if current >= target:
            break
        if current > best:
            best, last_rise = current, time.monotonic()
        elif time.monotonic() - last_rise > stall:
            raise AssertionError(f"{what}: stuck at {best} of {target} for {stall:.0f}s")
        time.sleep(interval)
    return time.monotonic() - started


class ConsumerProcess:
    """`segops stream` in its own process, its log in a file (a full pipe would stall it)."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "segops_cli", "--verbose", "stream", *args],
            env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def while_alive(self, condition: Callable[[], bool]) -> Callable[[], bool]:
        """`condition` for `wait_until`, failing at once, with the log, if the consumer died:
        a dead consumer's last heartbeat would otherwise still read as healthy."""
        def check() -> bool:
            assert self.alive(), self.log()[-3000:]
            return condition()
        return check

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code


def stored_count(settings) -> int:
    """Events stored (the key makes each row distinct); cheap to poll, since no ids leave
    PostgreSQL."""
    return rows(settings, "select count(*) from raw.events")[0][0]


def stored_ids(settings) -> list[str]:
    return [row[0] for row in rows(settings, "select event_id from raw.events")]


def dead_letters(settings) -> list[tuple[str, str]]:
    return rows(settings, "select message_id, reason from raw.dead_letters")


def tally(settings, published: set[str], *, bad: int = 0) -> dict[str, int]:
    """published, stored, duplicates, dead-lettered and lost, as the results table shows them.
    A duplicate is one event id stored twice (for two customers), since the key refuses the
    same event twice."""
    ids = stored_ids(settings)
    stored = set(ids)
    return {
        "published": len(published) + bad,
        "stored": len(stored & published),
        "duplicates": len(ids) - len(stored),
        "dead_lettered": len(dead_letters(settings)),
        "lost": len(published - stored),
    }


def record(scenario: str, counts: dict, passed: bool, **figures) -> None:
    RESULTS[scenario] = {**counts, **figures, "pass": passed, "scale": SCALE}


def report(write: Callable[[str], None]) -> None:
    """Print the table; write chaos.json when SEGOPS_CHAOS_RESULTS names a file."""
    if not RESULTS:
        return
    columns = ("published", "stored", "duplicates", "dead_lettered", "lost")
    write(f"\nfault suite ({SCALE})\n")
    write(f"{'':4}" + "".join(f"{c:>15}" for c in columns) + "   pass  figures\n")
    for scenario, row in sorted(RESULTS.items()):
        extra = {k: v for k, v in row.items() if k not in (*columns, "pass", "scale")}
        write(f"{scenario:4}" + "".join(f"{row.get(c, '-'):>15}" for c in columns)
              + f"   {'yes' if row['pass'] else 'NO':4}  {json.dumps(extra)}\n")
    target = os.environ.get("SEGOPS_CHAOS_RESULTS")
    if target:
        from bench.machine import describe_machine

        Path(target).write_text(json.dumps(
            {"machine": describe_machine(), "scale": SCALE, "scenarios": RESULTS}, indent=2
        ) + "\n")


def drift(settings) -> dict[str, int]:
    """Each real-time segment's difference, in PostgreSQL, from the segment evaluated over every
    stored row at the stream's sweep time (run it once the consumers stopped)."""
    with psycopg.connect(settings.postgres_dsn) as con:
        (at,) = con.execute("select at from segops.stream_state where name = 'sweep'"
                            ).fetchone()
        members = set(con.execute("select segment, customer_id from segops.segment_membership"
                                  ).fetchall())
    return {name: len(found ^ {c for s, c in members if s == name})
            for name, found in batch_members(settings, at).items()}


def live_changes_alternate(dsn: str) -> int:
    """Customer-segment pairs whose recorded changes do not alternate enter, exit, enter, …
    ending where membership is: a duplicate enter or a lost exit shows here."""
    with psycopg.connect(dsn) as con:
        return con.execute(
            """
            with ordered as (
                select customer_id, segment, change,
                    lag(change) over (partition by customer_id, segment order by change_id)
                        as previous,
                    row_number() over (partition by customer_id, segment
                                       order by change_id desc) as from_last
                from segops.segment_membership_changes
            )
            select count(*) from ordered as o
            where change = previous or (previous is null and change <> 'enter')
               or (from_last = 1 and (change = 'enter') <> exists (
                   select from segops.segment_membership as m
                   where (m.customer_id, m.segment) = (o.customer_id, o.segment)))
            """).fetchone()[0]


def batch_members(settings, at: datetime, evaluator: RealtimeEvaluator | None = None
                  ) -> dict[str, set[str]]:
    """Each real-time segment's members by the batch evaluation: its SQL over every row stored
    in PostgreSQL, in one ScopeEngine, at `at`; what the stream's membership must equal."""
    evaluator = evaluator or RealtimeEvaluator.from_catalog(Catalog.load(settings.manifest_path))
    with psycopg.connect(settings.postgres_dsn) as con:
        customers = [row[0] for row in con.execute(
            "select customer_id from raw.events union select customer_id from raw.customers"
        ).fetchall()]
        engine = ScopeEngine(memory_limit="2GB")
        engine.load(con, customers)
    for copy, relation in evaluator.sources().items():
        engine.scope_as(copy, relation)
    set_session_now(engine.con, at)
    stage_found(engine.con, {name: evaluator.members_query(engine.con, name)
                             for name in evaluator.queries})
    found = engine.con.execute("select segment, customer_id from _found").fetchall()
    engine.con.close()
    return {name: {customer for segment, customer in found if segment == name}
            for name in evaluator.queries}
