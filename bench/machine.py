"""What the figures were measured on: cores, memory, package versions, date."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version


def _ticks() -> list[int]:
    """Ticks since boot over every core: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:9]]


def cpu_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor, all ticks) since boot, over every core."""
    ticks = _ticks()
    return ticks[7], sum(ticks)


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system, every thread) process `pid` has used so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by process `root` and every process under it, running or ended:
    a server's (PostgreSQL, the emulator), whose work is done by the processes it starts."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
        except OSError:  # ended meanwhile: its time is in its parent's children's time
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        # its own time and that of its children that ended
        ticks[int(entry)] = sum(int(field) for field in fields[11:15])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def busy_ticks() -> tuple[int, int]:
    """(ticks not idle, all ticks) since boot, over every core."""
    ticks = _ticks()
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class CoresUsed:
    """How many cores each group of processes used over a window, and the whole machine: where
    a figure's time went when the processes share a few cores. `servers` are counted with every
    process under them."""

    def __init__(self, groups: dict[str, list[int]], servers: dict[str, int] | None = None):
        self.groups = groups
        self.servers = servers or {}
        self._started = time.monotonic()
        self._machine = busy_ticks()
        self._cpu = self._seconds()

    def _seconds(self) -> dict[str, float]:
        used = {name: sum(process_cpu_seconds(pid) for pid in pids)
                for name, pids in self.groups.items()}
        return used | {name: tree_cpu_seconds(pid) for name, pid in self.servers.items()}

    def stop(self) -> dict[str, float]:
        seconds = time.monotonic() - self._started
        busy, total = busy_ticks()
        used = {name: (cpu - self._cpu[name]) / seconds for name, cpu in self._seconds().items()}
        used["machine"] = (busy - self._machine[0]) / (total - self._machine[1]) * os.cpu_count()
        return {name: round(cores, 2) for name, cores in used.items()}


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
