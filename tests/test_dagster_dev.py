"""`dagster dev -w workspace.yaml` serves the code location, and a run launched there (as the
schedule launches it, in a run worker process of its own) rebuilds the segments: the live state
in PostgreSQL (SEGOPS_POSTGRES_DSN in its environment), the models in the lake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from demo.emulator import free_port
from segops.live_state import read_live_state
from segops.membership import current_members
from segops.settings import PROJECT_ROOT
from tests.live_helpers import NOW
from tests.shop import add_customer

QUERY = """
{
  assetNodes { assetKey { path } }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    schedules { name scheduleState { status } }
    sensors { name sensorState { status } }
  } } }
}
"""

LOCATIONS = """
{
  workspaceOrError { ... on Workspace { locationEntries {
    locationOrLoadError { __typename ... on PythonError { message } }
  } } }
}
"""


LAUNCH = """
mutation Launch($selector: JobOrPipelineSelector!) {
  launchRun(executionParams: {selector: $selector, runConfigData: {}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""

RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def wait_for(port: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "dagster dev exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                pass
            data = graphql(port, LOCATIONS)
            for entry in data["workspaceOrError"]["locationEntries"]:
                status = entry["locationOrLoadError"]
                if status and status["__typename"] == "PythonError":
                    pytest.fail(f"the code location failed to load: {status['message']}")
                if status and status["__typename"] == "RepositoryLocation":
                    return
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    pytest.fail("dagster dev did not serve the asset graph in time")


def run_nightly_there(port: int, timeout: float = 300) -> str:
    """Launch the nightly job as the schedule would and wait for its run to finish."""
    selector = {"repositoryLocationName": "segops", "repositoryName": "__repository__",
                "jobName": "nightly_segments"}
    launched = graphql(port, LAUNCH, {"selector": selector})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = graphql(port, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in FINISHED:
            return status
        time.sleep(0.5)
    pytest.fail(f"the nightly run launched in dagster dev did not finish in {timeout:.0f} s")


@pytest.mark.slow
def test_dagster_dev_serves_segments_membership_schedule_and_sensor(live_shop, tmp_path: Path):
    with psycopg.connect(live_shop.postgres_dsn) as con:
        add_customer(con, "zurich", country="CH", signed_up_at=NOW)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert env["SEGOPS_POSTGRES_DSN"] == live_shop.postgres_dsn
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
         "-p", str(port), "-h", "127.0.0.1"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(port, process)
        data = graphql(port, QUERY)
        nightly = run_nightly_there(port)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:  # under load it once did not stop within a minute: allow three, then say so
            exit_code = process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("dagster dev did not stop within 180 s of SIGTERM:\n"
                        + (tmp_path / "dagster-dev.log").read_text()[-3000:])
    keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    assert {"raw/events", "segments/cart_abandoners", "membership/cart_abandoners",
            "membership/vip_quarterly", "staging/stg_events"} <= keys
    (repository,) = data["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    assert schedules == {"nightly_segments_schedule": "RUNNING", "flush_events_schedule": "RUNNING",
                         "lake_maintenance_schedule": "RUNNING"}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors == {"realtime_segments_sensor": "RUNNING", "event_types_sensor": "RUNNING"}
    assert exit_code in (0, -signal.SIGTERM), (tmp_path / "dagster-dev.log").read_text()[-3000:]
    assert nightly == "SUCCESS", (tmp_path / "dagster-dev.log").read_text()[-3000:]
    with read_live_state(live_shop.postgres_dsn) as con:
        assert list(current_members(con, "dach_customers")["customer_id"]) == ["zurich"]
