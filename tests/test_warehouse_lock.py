"""Sharing the one-writer warehouse between processes: waiting, stepping aside, giving up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from segops.dbt import run_dbt
from segops.schema import ensure_schema
from segops.warehouse import HeldConnection, WarehouseBusy, connect, someone_waiting
from streaming.consumer import Consumer, ConsumerConfig

BUSY_WRITER = """
import sys, time
from segops.warehouse import connect
while True:
    with connect(sys.argv[1], yield_to_waiters={polite}) as con:
        con.execute("insert into raw.dead_letters (reason) values ('tick')")
        print("holding", flush=True)
        time.sleep({hold})
"""


def start_writer(path, *, polite: bool, hold: float) -> subprocess.Popen:
    code = textwrap.dedent(BUSY_WRITER).format(polite=polite, hold=hold)
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"holding"
    return process


@pytest.fixture
def warehouse_path(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with connect(path) as con:
        ensure_schema(con)
    return path


def test_a_writer_that_steps_aside_lets_readers_in(warehouse_path):
    writer = start_writer(warehouse_path, polite=True, hold=0.2)  # busy ~99% of the time
    try:
        for _ in range(5):
            with connect(warehouse_path, read_only=True, timeout=10) as con:
                assert con.execute("select count(*) from raw.dead_letters").fetchone()[0] >= 0
    finally:
        writer.kill()
        writer.wait()
    markers = warehouse_path.with_name("warehouse.duckdb.waiting")
    assert not markers.exists() or not any(markers.iterdir()), "waiters remove their markers"


def test_a_held_warehouse_gives_a_clear_error_after_the_timeout(warehouse_path):
    holder = start_writer(warehouse_path, polite=False, hold=3600)
    try:
        with pytest.raises(WarehouseBusy, match="stayed locked by another process"), connect(
            warehouse_path, timeout=1
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with connect(warehouse_path) as con:
        assert con.execute("select count(*) from raw.dead_letters").fetchone()[0] >= 1


def test_a_consumer_that_compiled_its_segments_leaves_the_warehouse_free(warehouse):
    run_dbt(warehouse, ["parse"])  # a manifest without compiled SQL: the consumer compiles it
    Consumer(warehouse, ConsumerConfig(publish_changes=False)).start()
    other_process = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(warehouse.warehouse)!r})"],
        capture_output=True, text=True,
    )
    assert other_process.returncode == 0, other_process.stderr


def test_a_marker_left_by_a_dead_process_is_ignored_and_removed(warehouse_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    markers = warehouse_path.with_name("warehouse.duckdb.waiting")
    markers.mkdir()
    stale = markers / f"{finished.stdout.strip()}-1"
    stale.touch()
    assert not someone_waiting(warehouse_path)
    assert not stale.exists()


def hold_until_done(held: HeldConnection, other: subprocess.Popen, limit: float) -> list[int]:
    """Use the held warehouse back to back until `other` exits; the connections used."""
    used = []
    deadline = time.monotonic() + limit
    while other.poll() is None and time.monotonic() < deadline:
        with held.use() as con:
            con.execute("insert into raw.dead_letters (reason) values ('tick')")
            used.append(id(con))
    return used


def test_a_held_warehouse_stays_open_until_another_process_waits(warehouse_path):
    held = HeldConnection(warehouse_path, timeout=10)
    with held.held():
        with held.use() as first, held.use() as second:
            assert first is second, "no other process waits: the connection is kept"
        reader = subprocess.Popen(
            [sys.executable, "-c", "import sys; from segops.warehouse import connect\n"
             "with connect(sys.argv[1], read_only=True, timeout=20) as con:\n"
             "    con.execute('select 1')", str(warehouse_path)],
            stderr=subprocess.PIPE, text=True,
        )
        used = hold_until_done(held, reader, limit=30)
        assert reader.wait() == 0, reader.stderr.read()
    assert len(set(used)) >= 2, "the holder gave the file up for the reader and took it back"


def test_dbt_says_it_waits_and_a_held_warehouse_lets_it_in(warehouse):
    """dbt retries after 1, 2, 4... s; without its marker a busy holder would shut it out."""
    held = HeldConnection(warehouse.warehouse, timeout=30)
    with held.held():
        with held.use():
            pass
        dbt = subprocess.Popen(
            [sys.executable, "-c", "from segops.dbt import run_dbt\n"
             "from segops.settings import load_settings\n"
             "run_dbt(load_settings(), ['show', '--inline', 'select count(*) from raw.events'])"],
            stderr=subprocess.PIPE, text=True,
        )
        hold_until_done(held, dbt, limit=60)
        assert dbt.poll() is not None, "dbt never got the warehouse while it was held"
        assert dbt.returncode == 0, dbt.stderr.read()
