"""What the figures were measured on: cores, memory, package versions, date."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version


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
