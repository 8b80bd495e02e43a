"""`make up`: the whole platform on one machine, started together and stopped together.

The Pub/Sub emulator, the streaming consumer, `dagster dev` (webserver and daemon, so the
schedule and the sensor really run) and a producer of demo traffic, each in its own process
group. Ctrl-C (or SIGTERM) stops them in reverse order, draining the consumer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from rich.console import Console

from demo.emulator import PubSubEmulator
from segops.settings import PROJECT_ROOT, Settings

BIN = Path(sys.executable).parent


def run_platform(settings: Settings, console: Console, *, rate: float, port: int) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    env = {**os.environ, "SEGOPS_WAREHOUSE": str(settings.warehouse)}
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data" / "dagster"))
    emulator = None
    if "PUBSUB_EMULATOR_HOST" not in env:
        emulator = PubSubEmulator(port=8085)
        env["PUBSUB_EMULATOR_HOST"] = emulator.start()
        console.print(f"Pub/Sub emulator on {emulator.host}")
    segops = [str(BIN / "segops")]
    processes: list[tuple[str, subprocess.Popen]] = []
    try:
        subprocess.run([*segops, "init"], env=env, check=True)
        for name, command in (
            ("consumer", [*segops, "stream"]),
            ("dagster", [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)]),
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
        if emulator:
            emulator.stop()
            console.print("stopped the Pub/Sub emulator")
    return 0
