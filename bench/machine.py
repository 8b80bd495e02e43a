"""What the figures were measured on: cores, memory, package versions, date."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version


def cpu_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor, all ticks) since boot, over every core."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return ticks[7], sum(ticks[:8])  # user nice system idle iowait irq softirq steal


def stolen_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time the hypervisor gave to others between two readings: on a
    shared machine it is why the same code measures slower in one run than in the next."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else 0.0


def describe_machine() -> dict:
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        # 1, 5 and 15 minutes: other work on a shared machine slows the figures down.
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "packages": {
            name: version(name)
            for name in ("duckdb", "dbt-core", "dbt-duckdb", "dagster", "google-cloud-pubsub")
        },
    }
