"""Start and stop Google's Pub/Sub emulator, for `make up`, tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from segops.errors import SegOpsError


class EmulatorUnavailable(SegOpsError):
    """The emulator could not be started here."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen | None, first: signal.Signals, timeout: float) -> None:
    """Send `first` to the process group of a server we started, then SIGKILL after `timeout`
    seconds; the group, so the signal reaches a server started through a wrapper (gcloud's
    script, `runuser`)."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, first)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def is_serving(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class PubSubEmulator:
    """`gcloud beta emulators pubsub start` on a free loopback port, in its own process group."""

    def __init__(self, port: int | None = None, data_dir: Path | None = None):
        self.host = f"127.0.0.1:{port or free_port()}"
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> str:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorUnavailable(
                "gcloud is not installed; install the google-cloud-cli-pubsub-emulator package"
            )
        command = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={self.host}"]
        if self.data_dir:
            command.append(f"--data-dir={self.data_dir}")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not is_serving(self.host):
            if self.process.poll() is not None:
                raise EmulatorUnavailable(f"the emulator exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorUnavailable(f"the emulator did not answer on {self.host}")
            time.sleep(0.2)
        return self.host

    def stop(self) -> None:
        stop_group(self.process, signal.SIGTERM, timeout=15)

    def __enter__(self) -> PubSubEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
