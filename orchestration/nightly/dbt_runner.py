"""dbt run inside the Dagster step, its results turned into Dagster events as they happen.

dagster-dbt's CLI resource starts `dbt` as a process of its own for every build (a Python
start and dbt's imports, 2 to 3 s on two cores) and sets up a dbt adapter of its own in
Dagster's process (about 1 s more). Here dbt runs through `dbtRunner` in the step's process,
and each result event goes through dagster-dbt's own translation (`DbtCoreCliEventMessage`),
so assets, checks, their metadata and subset selection are what the CLI resource gives.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
from dbt.cli.main import dbtRunnerResult
from dbt_common.events.base_types import EventMsg
from dbt_common.events.functions import msg_to_dict

from segops.dbt import describe_failure, invoke

# dbt's events that carry a node's result; dagster-dbt turns exactly these into Dagster events.
RESULT_EVENTS = frozenset({"LogModelResult", "LogTestResult", "LogSeedResult",
                           "LogSnapshotResult"})
PARTIAL_PARSE = "partial_parse.msgpack"
# The check that reports a model's dbt unit tests (dagster-dbt reports only its data tests).
UNIT_TESTS_CHECK = "unit_tests"
# Run folders kept per step: enough to compare recent runs, bounded for a schedule that runs for
# years (each folder holds dbt's manifest, results and compiled SQL, over a megabyte).
RUN_FOLDERS_KEPT = 10


class DbtResource(dg.ConfigurableResource):
    """The dbt project, built in this process; every run writes its artifacts to a folder of
    its own under `target_dir`, as dagster-dbt's runs do. `target` is the profile's target
    (by default the profile's own: the lake)."""

    project_dir: str
    profiles_dir: str
    target_dir: str
    target: str | None = None

    def build(self, context: dg.AssetExecutionContext) -> Iterator[object]:
        """`dbt build` of the step's selection. A failing model does not stop the others: its
        asset is not materialized, its membership step is skipped, and dbt's error is logged
        as an error of this step. Raises if dbt could not run at all."""
        params = get_updated_cli_invocation_params_for_context(
            context=context, manifest={}, dagster_dbt_translator=DagsterDbtTranslator()
        )
        target = self._run_target(context)
        args = ["build", *params.selection_args,
                "--project-dir", self.project_dir, "--profiles-dir", self.profiles_dir,
                "--target-path", str(target), "--log-path", str(target)]
        if self.target:
            args += ["--target", self.target]
        if params.indirect_selection:
            args += ["--indirect-selection", params.indirect_selection]
        unit_tests: dict[str, dict[str, str]] = {}  # model -> unit test -> status
        for raw in _results_as_they_come(args, context.log):
            node = raw["data"]["node_info"]
            if node["resource_type"] == "unit_test":
                unit_test = params.manifest["unit_tests"][node["unique_id"]]
                for model in unit_test["depends_on"]["nodes"]:
                    unit_tests.setdefault(model, {})[unit_test["name"]] = raw["data"]["status"]
                continue
            event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
            yield from event.to_default_asset_events(
                manifest=params.manifest,
                dagster_dbt_translator=params.dagster_dbt_translator,
                context=context,
                target_path=target,
                project=params.dbt_project,
            )
        self._keep_parse(target)
        for model, statuses in unit_tests.items():
            key = dg.AssetCheckKey(
                params.dagster_dbt_translator.get_asset_key(params.manifest["nodes"][model]),
                UNIT_TESTS_CHECK,
            )
            if key in context.selected_asset_check_keys:
                failed = {name: status for name, status in statuses.items() if status != "pass"}
                yield dg.AssetCheckResult(
                    asset_key=key.asset_key, check_name=key.name, passed=not failed,
                    metadata={"unit tests": len(statuses), "failed": failed},
                )

    def _run_target(self, context: dg.AssetExecutionContext) -> Path:
        """A fresh target folder, seeded with the partial-parse state of the last build so dbt
        parses only what changed since; the step's oldest folders beyond RUN_FOLDERS_KEPT go."""
        target_dir = Path(self.target_dir)
        step = context.op_execution_context.op.name
        prune_run_folders(target_dir, step, keep=RUN_FOLDERS_KEPT - 1)
        target = target_dir / f"{step}-{context.run.run_id[:7]}-{uuid.uuid4().hex[:7]}"
        target.mkdir(parents=True)
        if self._parse_state().exists():
            shutil.copy(self._parse_state(), target / PARTIAL_PARSE)
        return target

    def _parse_state(self) -> Path:
        """The partial-parse state builds start from. It is the target's own: dbt parses the
        whole project again when the profile differs from the state's, and the state in
        `target_dir` is the compile target's (`make manifest`, preview), which costs a build
        half a second."""
        return Path(self.target_dir) / f"{self.target or 'default'}.{PARTIAL_PARSE}"

    def _keep_parse(self, target: Path) -> None:
        """The run's partial-parse state becomes the next build's, replaced whole so that two
        builds at once never read half of one."""
        if (target / PARTIAL_PARSE).exists():
            staged = target / f"{PARTIAL_PARSE}.kept"
            shutil.copy(target / PARTIAL_PARSE, staged)
            os.replace(staged, self._parse_state())


def prune_run_folders(target_dir: Path, step: str, *, keep: int) -> None:
    """Remove all but the `keep` newest run folders of `step` under `target_dir`."""
    folders = sorted((path for path in target_dir.glob(f"{step}-*") if path.is_dir()),
                     key=lambda path: path.stat().st_mtime, reverse=True)
    for folder in folders[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


def _results_as_they_come(args: list[str], log: dg.DagsterLogManager) -> Iterator[dict]:
    """dbt's result events as dicts (the shape of its JSON log), while dbt runs in a thread.
    What failed in a build that ran goes to `log` as an error; raises if dbt could not run."""
    results: queue.Queue[dict | None] = queue.Queue()
    finished: list[dbtRunnerResult] = []

    def relay(message: EventMsg) -> None:
        if message.info.name in RESULT_EVENTS:
            results.put(msg_to_dict(message))

    def run() -> None:
        try:
            finished.append(invoke(args, callbacks=[relay]))
        finally:
            results.put(None)

    worker = threading.Thread(target=run, name="dbt-build", daemon=True)
    worker.start()
    while (raw := results.get()) is not None:
        yield raw
    worker.join()
    if not finished or finished[0].exception is not None:
        why = finished[0].exception if finished else "it stopped without a result"
        raise dg.Failure(description=f"dbt could not run: {why}")
    if not finished[0].success:
        log.error(describe_failure(["build"], finished[0], ""))
