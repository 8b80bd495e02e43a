"""The benchmark suite at small scale: it runs and writes well-formed results (not a speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B7h", "B8", "B9")
FIELDS = ("value", "unit", "goal", "met", "baseline", "command")


@pytest.mark.slow
def test_small_scale_writes_every_figure_with_its_limit(pubsub_emulator, tmp_path):
    results_dir = ROOT / "bench" / "results"
    before = {p.name: p.stat().st_mtime for p in results_dir.glob("latest.*")}
    output = tmp_path / "results"

    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "small", "--output", str(output),
         "--emulator", pubsub_emulator, "--memory-seconds", "12"],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )

    assert completed.returncode == 0, (completed.stdout[-4000:], completed.stderr[-4000:])
    results = json.loads((output / "latest.json").read_text())
    assert set(results) == {"machine", *FIGURES}
    machine = results["machine"]
    assert machine["cores"] >= 1
    assert machine["memory_gib"] > 0
    assert {"duckdb", "dbt-core", "dagster"} <= set(machine["packages"])
    for figure_id in FIGURES:
        figure = results[figure_id]
        assert set(FIELDS) <= set(figure), figure_id
        assert "error" not in figure, (figure_id, figure.get("error"))
        assert isinstance(figure["value"], int | float), figure_id
        assert isinstance(figure["met"], bool), figure_id
        assert figure["unit"] and figure["goal"], figure_id
        assert figure["command"].startswith("python -m bench "), figure_id
        assert figure_id in figure["command"], figure_id
        assert figure["scale"] == "small"
        assert 0 <= figure["cpu_stolen_percent"] <= 100, figure_id
    for figure_id in ("B1", "B3", "B4", "B7"):  # against a limit of the same run
        assert results[figure_id]["baseline"] > 0, figure_id
    # Where a batch's time went, for the figures about batches.
    steps = {"open", "store", "evaluate", "commit"}
    assert {count: set(by_step) for count, by_step in results["B2"]["median_steps_ms"].items()
            } == {"1": steps, "3": steps}
    assert {name: set(by_step) for name, by_step in results["B3"]["median_steps_ms"].items()} == {
        "history": steps, "reference": steps}
    # B4's two nights, each with its changes, and its fixed cost beside them.
    nights = results["B4"]["nights"]
    assert nights["first"]["changes"] > 0 and nights["second"]["changes"] == 0
    assert set(results["B4"]["fixed_cost"]) == {"first", "second"}
    assert len(nights["second"]["job_runs_seconds"]) == 3, "the second night's median of three"
    assert sorted(nights["second"]["job_runs_seconds"])[1] == nights["second"]["job_seconds"]
    # B7's glibc heap beside its resident set, a part of it.
    assert 0 < results["B7"]["heap_mib_first"] < results["B7"]["baseline"]
    assert len(results["B7"]["heap_samples_mib"]) == len(results["B7"]["samples_mib"])
    # B7h's batches, read from the consumer's log, at the start and the end.
    assert results["B7h"]["batches"] > 0
    assert results["B7h"]["evaluate_ms_first"] > 0 and results["B7h"]["evaluate_ms_last"] > 0
    # Where B9's CPU went, alone, beside the stream and beside the CPU load.
    cores = results["B9"]["cores"]
    assert set(cores["alone"]) == {"nightly", "consumers", "machine"}
    assert set(cores["beside the stream"]) == {"nightly", "consumers", "producer", "machine"}
    assert set(cores["beside a CPU load"]) == {"nightly", "consumers", "cpu load", "machine"}
    assert cores["alone"]["nightly"] > 0 and cores["beside the stream"]["consumers"] > 0
    assert cores["beside a CPU load"]["cpu load"] > 0
    # B9's figure is the median of five runs of the job each side, the sides taking turns;
    # the stream's latency counts while the job ran beside it. The control burns the cores
    # the stream took on its own.
    order = results["B9"]["order"]
    assert [order.count(side) for side in ("alone", "beside the stream", "beside a CPU load")
            ] == [5, 5, 5]
    assert results["B9"]["samples"] > 0 and results["B9"]["stream_cores"] > 0
    nights = results["B9"]["nights_seconds"]
    assert {side: len(runs) for side, runs in nights.items()} == dict.fromkeys(order, 5)
    assert sorted(nights["alone"])[2] == results["B9"]["baseline"]
    assert sorted(nights["beside a CPU load"])[2] == results["B9"]["control_seconds"]

    rows = [line for line in (output / "latest.md").read_text().splitlines()
            if line.startswith("| B")]
    assert [row.split("|")[1].strip() for row in rows] == list(FIGURES)
    assert all(row.rstrip().endswith(("| yes |", "| **no** |")) for row in rows)
    after = {p.name: p.stat().st_mtime for p in results_dir.glob("latest.*")}
    assert after == before, "the smoke run must not touch bench/results"
