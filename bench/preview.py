"""B6: `segops preview` of a windowed segment on the big shop answers within a second, as the
analyst sees it: the whole command, from its start to its answer.

On a copy of the big shop the nightly job has run on (so membership is full, as in production),
each windowed real-time segment below is previewed by running `segops preview <segment>
--json` as a process of its own: the first run is reported as the cold one, the median of the
next ones is the figure (the slowest segment's).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench.harness import Lab, figure
from bench.nightly import built

FIGURES = ("B6",)
SEGMENTS = ("high_intent_browsers", "cart_abandoners")
GOAL_SECONDS = 1.0


def measure(lab: Lab) -> dict[str, dict]:
    scale = lab.scale
    shop = lab.shop(scale.history_customers)
    medians, runs, cold, reach = {}, {}, {}, {}
    # The workspace points the environment, and so each command, at its copy of the shop.
    with lab.workspace("preview", built(lab, shop.customers)):
        for segment in SEGMENTS:
            seconds = []
            for _ in range(scale.preview_runs + 1):
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "segops_cli", "preview", segment,
                                       "--json"], check=True, capture_output=True)
                seconds.append(time.monotonic() - started)
            cold[segment], warm = round(seconds[0], 3), seconds[1:]
            medians[segment] = statistics.median(warm)
            runs[segment] = [round(s, 3) for s in warm]
            reach[segment] = json.loads(done.stdout)["reach"]
    slowest = max(medians, key=medians.get)
    worst = medians[slowest]
    print("  " + ", ".join(f"{s} {m:.2f}s (cold {cold[s]:.2f}s)" for s, m in medians.items()),
          flush=True)
    return {
        "B6": figure(
            what=f"`segops preview` of a windowed segment at {shop.label}, the whole command",
            value=round(worst, 3), unit=f"s median warm ({slowest})", goal="<= 1 s",
            met=worst <= GOAL_SECONDS, baseline=None,
            summary=", ".join(f"{s} {m:.2f} s (cold {cold[s]:.2f} s)"
                              for s, m in medians.items()),
            median_s={s: round(m, 3) for s, m in medians.items()}, runs_s=runs, cold_s=cold,
            reach=reach, history_customers=shop.customers, history_events=shop.events,
        ),
    }
