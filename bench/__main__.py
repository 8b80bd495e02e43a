"""SegOps benchmarks: every figure beside its limit, measured in the same run on the same machine.

    python -m bench [--scale full|small] [--only B3,B6] [--output DIR]

| id | figure                                                  | measured against             |
|----|---------------------------------------------------------|------------------------------|
| B1 | consumer throughput at 1M customers, 1 and 3 consumers  | bare pulls (>= 10k/s, 0.5x)  |
| B2 | publish → membership committed latency at 1,000 ev/s    | p50 <= 250 ms, p99 <= 1 s    |
| B3 | real-time evaluation per micro-batch at 10M events      | the same at 1M (<= 1.5x)     |
| B4 | nightly with membership, 1M / 10M, two nights           | the same by hand (<= 2x)     |
| B5 | time-driven exit committed after its window boundary    | <= 5 s                       |
| B6 | `segops preview` of a windowed segment at 1M / 10M      | <= 1 s                       |
| B7 | consumer resident memory over 10 minutes at 1,000 ev/s  | after the first minute (+10%)|
| B7h| B7 plus a bot-like customer at 35 ev/s                  | the first minute (2x each)   |
| B8 | one membership lookup while 3 consumers stream          | p99 <= 10 ms                 |
| B9 | the nightly job while 3 consumers stream                | the job alone (<= 1.2x)      |
| B4L| B4 at 10M customers / 100M events (only when named)     | hand-written SQL (<= 1.5x)   |

Every figure runs on the project's own PostgreSQL (live state) and a DuckLake (history).

`--scale small` runs every figure on small sizes in about two minutes: it checks that the
harness works and writes well-formed results, not a speed. Results are merged into
DIR/latest.json (default bench/results) and DIR/latest.md is rewritten from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench import evaluation, memory, nightly, nightly_large, preview, report, stream, timing
from bench.harness import SCALES, Lab
from bench.machine import cpu_ticks, describe_machine, stolen_percent

# In this order (B5 and B6 use the shop B4's nightly built). A group with ON_REQUEST runs only
# when --only names it.
GROUPS = (stream, evaluation, nightly, timing, preview, memory, nightly_large)
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--only", type=lambda text: [s.strip() for s in text.split(",")],
                        help="comma-separated figure ids, in any case (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="directory for latest.json and latest.md (default: bench/results)")
    parser.add_argument("--emulator", metavar="HOST:PORT",
                        help="use this running Pub/Sub emulator instead of starting one")
    parser.add_argument("--memory-seconds", type=float,
                        help="length of B7's run (default: 600 at full scale, 30 at small)")
    args = parser.parse_args(argv)
    known = {f.lower(): f for group in GROUPS for f in group.FIGURES}
    unknown = sorted(f for f in args.only or [] if f.lower() not in known)
    if unknown:
        parser.error(f"unknown figure ids {', '.join(unknown)} "
                     f"(known: {', '.join(known.values())})")
    if args.only:
        args.only = [known[f.lower()] for f in args.only]
    return args


def command(scale: str, figures: tuple[str, ...]) -> str:
    return f"python -m bench --scale {scale} --only {','.join(figures)}"


def run(args: argparse.Namespace) -> tuple[dict[str, dict], bool]:
    selected = set(args.only or [f for group in GROUPS for f in group.FIGURES
                                 if not getattr(group, "ON_REQUEST", False)])
    figures: dict[str, dict] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="segops-bench-") as tmp:
        scale = SCALES[args.scale]
        if args.memory_seconds:
            scale = replace(scale, memory_seconds=args.memory_seconds,
                            memory_warmup_seconds=min(scale.memory_warmup_seconds,
                                                      args.memory_seconds / 3))
        lab = Lab(Path(tmp), scale, emulator=args.emulator)
        try:
            for group in GROUPS:
                wanted = tuple(f for f in group.FIGURES if f in selected)
                if not wanted:
                    continue
                print(f"{'/'.join(wanted)} ({group.__name__})", flush=True)
                started, ticks = time.monotonic(), cpu_ticks()
                try:
                    measured = group.measure(lab)
                except Exception as error:
                    traceback.print_exc()
                    failed = True
                    measured = {f: {"value": None, "unit": None, "goal": None, "met": False,
                                    "baseline": None, "error": f"{type(error).__name__}: {error}"}
                                for f in group.FIGURES}
                seconds = round(time.monotonic() - started, 1)
                stolen = stolen_percent(ticks, cpu_ticks())
                for figure_id in wanted:
                    figures[figure_id] = {
                        **measured[figure_id],
                        "command": command(args.scale, group.FIGURES),
                        "scale": args.scale,
                        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "group_seconds": seconds,
                        "load_average_after": round(os.getloadavg()[0], 2),
                        "cpu_stolen_percent": stolen,
                    }
        finally:
            lab.close()
    return figures, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Dagster logs every event of every run as a record; the figures are enough.
    for name in ("dagster", "dagster.builtin"):
        logging.getLogger(name).setLevel(logging.WARNING)
    machine = describe_machine()
    started = time.monotonic()
    figures, failed = run(args)
    results = report.write(args.output, figures, machine)
    print(f"\n{len(figures)} figures in {time.monotonic() - started:,.0f}s "
          f"→ {args.output / 'latest.json'}\n")
    print(report.markdown({"machine": machine, **{k: results[k] for k in figures}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
