"""Sharing the one-writer warehouse between processes: waiting, stepping aside, giving up."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from segops.dbt import run_dbt
from segops.warehouse import WarehouseBusy, connect, ensure_schema
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
