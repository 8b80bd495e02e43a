"""B6: `segops preview` of a windowed segment on the big shop answers within a second.

On a copy of the big shop the nightly job has run on (so membership is full, as in production),
each windowed real-time segment below is previewed as `segops preview <segment>` does it:
resolved once (the manifest's compiled SQL), then `run_preview` (evaluate read-only at now,
reach, sample, overlaps, would-enter/exit) once to warm up and several times timed. The figure is
the slowest segment's median.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import Lab, figure
from bench.nightly import built
from segops.clock import utc_now
from segops.preview import resolve_target, run_preview

FIGURES = ("B6",)
SEGMENTS = ("high_intent_browsers", "cart_abandoners")
GOAL_SECONDS = 1.0


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    shop = lab.shop(scale.history_customers)
    medians, runs, resolve_seconds, reach = {}, {}, {}, {}
    with lab.workspace("preview", built(lab, shop.customers)) as settings:
        for segment in SEGMENTS:
            started = time.monotonic()
            target = resolve_target(settings, segment, None)
            resolve_seconds[segment] = round(time.monotonic() - started, 2)
            run_preview(settings, target, utc_now())
            seconds = []
            for _ in range(scale.preview_runs):
                started = time.monotonic()
                result = run_preview(settings, target, utc_now())
                seconds.append(time.monotonic() - started)
            medians[segment] = statistics.median(seconds)
            runs[segment] = [round(s, 3) for s in seconds]
            reach[segment] = result.reach
    slowest = max(medians, key=medians.get)
    worst = medians[slowest]
    print("  " + ", ".join(f"{s} {m:.2f}s" for s, m in medians.items()), flush=True)
    return {
        "B6": figure(
            what=f"`segops preview` of a windowed segment at {shop.label}",
            value=round(worst, 3), unit=f"s median ({slowest})", goal="<= 1 s",
            met=worst <= GOAL_SECONDS, baseline=None,
            summary=", ".join(f"{s} {m:.2f} s" for s, m in medians.items()),
            median_s={s: round(m, 3) for s, m in medians.items()}, runs_s=runs,
            resolve_s=resolve_seconds, reach=reach,
            history_customers=shop.customers, history_events=shop.events,
        ),
    }
