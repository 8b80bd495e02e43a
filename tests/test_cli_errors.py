"""Readable CLI errors: a message that says what to do, exit code 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from demo.emulator import free_port
from segops.pubsub import ensure_pubsub


def segops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real `segops` entry point in its own process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "segops_cli", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


def assert_readable(result: subprocess.CompletedProcess, *phrases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    for phrase in phrases:
        assert phrase in output


def test_a_misspelt_segment_suggests_the_nearest(manifest):
    result = segops("members", "cart_abandoner")
    assert_readable(result, "no segment named 'cart_abandoner'",
                    "did you mean 'cart_abandoners'?")


@pytest.mark.parametrize("command", [["segments"], ["init"], ["members", "cart_abandoners"]])
def test_no_postgres_named_says_how_to_get_one(manifest, command):
    result = segops(*command)  # the tests run with SEGOPS_POSTGRES_DSN set but empty
    assert_readable(result, "no PostgreSQL for the live state", "SEGOPS_POSTGRES_DSN", "make up")


def test_a_damaged_manifest_says_how_to_rebuild_it(manifest):
    manifest.manifest_path.write_text('{"nodes": {')
    result = segops("segments")
    assert_readable(result, f"the dbt manifest at {manifest.manifest_path} is not valid JSON",
                    "dbt parse")


@pytest.mark.parametrize("command", [["init"], ["stream", "--until-idle", "1"]])
def test_an_unreachable_emulator_names_the_host_and_how_to_start_it(manifest, live_dsn, command):
    host = f"127.0.0.1:{free_port()}"
    result = segops(*command, env={"PUBSUB_EMULATOR_HOST": host,
                                   "SEGOPS_POSTGRES_DSN": live_dsn})
    assert_readable(result, f"cannot reach the Pub/Sub emulator at {host}",
                    "gcloud beta emulators pubsub start")


def test_debug_shows_the_traceback(manifest):
    result = segops("--debug", "members", "cart_abandoner")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("command", [["segments"], ["preview", "cart_abandoners"],
                                     ["stream", "--until-idle", "1"]])
def test_an_unreachable_postgres_names_it_and_how_to_start_it(manifest, pubsub, command):
    ensure_pubsub(pubsub)
    port = free_port()
    result = segops(*command, env={"SEGOPS_POSTGRES_DSN": f"host=127.0.0.1 port={port} "
                                                          "user=segops dbname=segops"})
    assert_readable(result, f"cannot reach PostgreSQL at 127.0.0.1:{port}/segops",
                    "make up")
