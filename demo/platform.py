"""`make up`: the whole platform on one machine, started together and stopped together.

The Pub/Sub emulator, the streaming consumer, `dagster dev` (webserver and daemon, so the
schedule and the sensor really run) and a producer of demo traffic, each in its own process
group. Ctrl-C (or SIGTERM) stops them in reverse order, draining the consumer.

With `postgres`, the live tables go to PostgreSQL (the project's own server under
`data/postgres`, unless SEGOPS_POSTGRES_DSN names one), a shop generated into them if they hold
none (as after `make demo`, they do), and `consumers` consumers share the subscription.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from rich.console import Console

from demo.emulator import PubSubEmulator
from demo.postgres import LocalPostgres
from segops.settings import PROJECT_ROOT, Settings

BIN = Path(sys.executable).parent


@contextmanager
def local_services(settings: Settings, console: Console, *, postgres: bool,
                   fresh: bool = False) -> Iterator[dict[str, str]]:
    """The environment for `segops` commands, with the Pub/Sub emulator and, with `postgres`,
    the project's own PostgreSQL started (its database emptied when `fresh`), unless the
    environment already names them; what was started is stopped after."""
    env = {**os.environ, "SEGOPS_WAREHOUSE": str(settings.warehouse)}
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster"))
    with ExitStack() as stack:
        if "PUBSUB_EMULATOR_HOST" not in env:
            stack.callback(console.print, "stopped the Pub/Sub emulator")
            emulator = stack.enter_context(PubSubEmulator(port=8085))
            env["PUBSUB_EMULATOR_HOST"] = emulator.host
            console.print(f"Pub/Sub emulator on {emulator.host}")
        if postgres and "SEGOPS_POSTGRES_DSN" not in env:
            stack.callback(console.print, "stopped PostgreSQL")
            server = stack.enter_context(LocalPostgres(PROJECT_ROOT / "data" / "postgres"))
            env["SEGOPS_POSTGRES_DSN"] = live_database(server.dsn, fresh=fresh)
            console.print(f"PostgreSQL on port {server.port}, data in {server.folder}")
        yield env


def run_platform(settings: Settings, console: Console, *, rate: float, port: int,
                 postgres: bool = False, consumers: int = 1) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    segops = [str(BIN / "segops")]
    processes: list[tuple[str, subprocess.Popen]] = []
    with local_services(settings, console, postgres=postgres) as env:
        try:
            subprocess.run([*segops, "init"], env=env, check=True)
            if postgres:
                subprocess.run([*segops, "generate", "--if-empty"], env=env, check=True)
            for name, command in (
                *((f"consumer {n + 1}", [*segops, "stream"]) for n in range(consumers)),
                ("dagster", [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p",
                             str(port)]),
                ("producer", [*segops, "produce", "--rate", str(rate), "--duration", "86400"]),
            ):
                processes.append(
                    (name, subprocess.Popen(command, env=env, cwd=PROJECT_ROOT,
                                            start_new_session=True))
                )
            console.print(
                f"[bold]SegOps is up[/bold]: Dagster UI on http://127.0.0.1:{port}, "
                f"{rate:g} events/s of demo traffic. Ctrl-C stops everything."
            )
            while not stop.wait(1.0):
                for name, process in processes:
                    if process.poll() is not None:
                        console.print(f"[red]{name} exited with {process.returncode}[/red]")
                        stop.set()
        finally:
            for name, process in reversed(processes):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                    console.print(f"stopped {name}")
    return 0


def live_database(server_dsn: str, name: str = "segops", *, fresh: bool = False) -> str:
    """The DSN of database `name` on the server, created if missing (again, when `fresh`)."""
    with psycopg.connect(server_dsn, autocommit=True) as con:
        if fresh:
            con.execute(f"drop database if exists {name} with (force)")
        if not con.execute("select exists (select from pg_database where datname = %s)",
                           [name]).fetchone()[0]:
            con.execute(f"create database {name}")
    return server_dsn.replace("dbname=postgres", f"dbname={name}")
