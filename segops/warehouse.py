"""The embedded DuckDB warehouse: connections that wait politely for the lock and give it up.

DuckDB lets one process write a file at a time, and while it does, other processes cannot even
open it read-only. Every SegOps process therefore opens the warehouse for one unit of work,
closes it, and retries with backoff while someone else holds it, leaving a marker that says it
waits. The streaming consumer alone keeps it open between micro-batches (`HeldConnection`) and
lets go as soon as such a marker appears.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import duckdb

from segops.errors import SegOpsError

log = logging.getLogger(__name__)



MAX_RETRY_DELAY = 0.25
MAX_STEP_ASIDE = 2.0


def _waiters_dir(path: Path) -> Path:
    return path.with_name(path.name + ".waiting")


def mark_waiting(path: Path) -> Path:
    """Leave a marker beside the file saying this process waits for it (remove it after)."""
    folder = _waiters_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{os.getpid()}-{threading.get_ident()}"
    marker.touch()
    return marker


def someone_waiting(path: Path) -> bool:
    """Whether another live process has left a marker saying it waits for the warehouse.

    Markers of processes that died waiting (a killed dbt) are removed on the way.
    """
    folder = _waiters_dir(path)
    if not folder.exists():
        return False
    waiting = False
    for marker in folder.iterdir():
        pid = marker.name.split("-")[0]
        if _alive(pid):
            waiting = True
        elif pid != str(os.getpid()):
            marker.unlink(missing_ok=True)
    return waiting


def _step_aside(path: Path) -> None:
    """Wait (a little) while another live process is waiting for the warehouse."""
    deadline = time.monotonic() + MAX_STEP_ASIDE
    while time.monotonic() < deadline and someone_waiting(path):
        time.sleep(0.02)


def _alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WarehouseMissing(SegOpsError):
    """There is no warehouse file yet."""


class WarehouseIncompatible(SegOpsError):
    """The warehouse file's storage version is newer than this DuckDB reads."""


class WarehouseBusy(SegOpsError):
    """Another process held the warehouse for longer than we were willing to wait."""


def is_lock_error(error: BaseException) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


@contextmanager
def connect(
    path: Path | str,
    *,
    read_only: bool = False,
    timeout: float = 120.0,
    on_wait: Callable[[float], None] | None = None,
    yield_to_waiters: bool = False,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse for one unit of work, retrying with backoff while it is locked.

    A process kept waiting leaves a marker beside the file. A frequent writer (the streaming
    consumer) passes `yield_to_waiters` and steps aside briefly while such a marker exists, so
    a Dagster run, the sensor or the CLI gets its turn instead of racing it forever.
    `on_wait(seconds_waited)` is called before each retry so long waits can be reported.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseMissing(
            f"no warehouse at {path}; create one with `make demo` "
            "(or `segops generate` then `make nightly`)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if yield_to_waiters:
        _step_aside(path)
    started = time.monotonic()
    delay = 0.02
    marker = None
    try:
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if "newer version of DuckDB" in str(error):
                    raise WarehouseIncompatible(
                        f"{path} was written by a newer DuckDB than this SegOps runs "
                        f"({duckdb.__version__}); move it aside, then `make demo` (or `segops "
                        "generate` and `make nightly`) builds a new one"
                    ) from None
                waited = time.monotonic() - started
                if not is_lock_error(error) or waited > timeout:
                    if is_lock_error(error):
                        raise WarehouseBusy(
                            f"warehouse {path} stayed locked by another process for "
                            f"{waited:.0f}s"
                        ) from error
                    raise
                if marker is None and not yield_to_waiters:
                    marker = mark_waiting(path)
                if on_wait:
                    on_wait(waited)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, MAX_RETRY_DELAY)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    try:
        con.execute("set TimeZone = 'UTC'; set enable_progress_bar = false")
        yield con
    finally:
        con.close()


class HeldConnection:
    """The warehouse kept open across units of work by its one frequent writer (the consumer).

    Opening the file takes tens of milliseconds and closing it checkpoints, a quarter of a
    micro-batch's time if done for each. Inside `held()` the connection stays open between
    uses and is given up as soon as another process leaves a waiter marker (`connect` does, and
    dbt does through the profile's plugin, `segops.dbt_waiting`), or when a use fails.
    Outside `held()` every use opens and closes, like `connect`. `on_open(con)` runs after
    each opening: whatever others wrote while the file was closed is seen there.
    """

    def __init__(self, path: Path | str, *, timeout: float,
                 on_wait: Callable[[float], None] | None = None,
                 on_open: Callable[[duckdb.DuckDBPyConnection], None] | None = None):
        self.path = Path(path)
        self.timeout = timeout
        self.on_wait = on_wait
        self.on_open = on_open
        self._keep = False
        self._open: ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        self._keep = True
        try:
            yield
        finally:
            self._keep = False
            self.release()

    @contextmanager
    def use(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None and someone_waiting(self.path):
            self.release()
        if self._con is None:
            with ExitStack() as stack:  # closed again if `on_open` fails
                con = stack.enter_context(connect(
                    self.path, timeout=self.timeout, on_wait=self.on_wait,
                    yield_to_waiters=True,
                ))
                if self.on_open:
                    self.on_open(con)
                self._con, self._open = con, stack.pop_all()
        try:
            yield self._con
        except BaseException:
            self.release()
            raise
        if not self._keep:
            self.release()

    def release(self) -> None:
        """Close the connection (checkpointing what was written) if it is open."""
        if self._open is not None:
            self._con, opened, self._open = None, self._open, None
            opened.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit when the block ends, roll back if it raises."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
