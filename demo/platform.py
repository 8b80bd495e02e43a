"""`make up`: the whole platform on one machine, started together and stopped together.

The Pub/Sub emulator, PostgreSQL (the project's own server under `data/postgres`, unless
SEGOPS_POSTGRES_DSN names one) with a shop generated into it if it holds none (after `make
demo`, it does), `consumers` streaming consumers sharing the subscription, `dagster dev`
(webserver and daemon, so the schedules and sensors really run) and a producer of demo traffic,
each in its own process group. Ctrl-C (or SIGTERM) stops them in reverse order, draining the
consumers.
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
from segops.settings import OWN_DATABASE, OWN_POSTGRES, PROJECT_ROOT

BIN = Path(sys.executable).parent


@contextmanager
def local_services(console: Console, *, fresh: bool = False) -> Iterator[dict[str, str]]:
    """The environment for `segops` commands, with the Pub/Sub emulator and the project's own
    PostgreSQL started (its database emptied when `fresh`), unless the environment already
    names them; what was started is stopped after."""
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster"))
    with ExitStack() as stack:
        if "PUBSUB_EMULATOR_HOST" not in env:
            stack.callback(console.print, "stopped the Pub/Sub emulator")
            emulator = stack.enter_context(PubSubEmulator(port=8085))
            env["PUBSUB_EMULATOR_HOST"] = emulator.host
            console.print(f"Pub/Sub emulator on {emulator.host}")
        if "SEGOPS_POSTGRES_DSN" not in env:
            stack.callback(console.print, "stopped PostgreSQL")
            server = stack.enter_context(LocalPostgres(OWN_POSTGRES))
            env["SEGOPS_POSTGRES_DSN"] = live_database(server.dsn, fresh=fresh)
            console.print(f"PostgreSQL on port {server.port}, data in {server.folder}")
        yield env


def run_platform(console: Console, *, rate: float, port: int, consumers: int) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    segops = [str(BIN / "segops")]
    processes: list[tuple[str, subprocess.Popen]] = []
    with local_services(console) as env:
        try:
            subprocess.run([*segops, "init"], env=env, check=True)
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


def live_database(server_dsn: str, name: str = OWN_DATABASE, *, fresh: bool = False) -> str:
    """The DSN of database `name` on the server, created if missing (again, when `fresh`)."""
    with psycopg.connect(server_dsn, autocommit=True) as con:
        if fresh:
            con.execute(f"drop database if exists {name} with (force)")
        if not con.execute("select exists (select from pg_database where datname = %s)",
                           [name]).fetchone()[0]:
            con.execute(f"create database {name}")
    return server_dsn.replace("dbname=postgres", f"dbname={name}")
