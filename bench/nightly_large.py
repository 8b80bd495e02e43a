"""B4L: B4 at ten times its size, 10M customers / 100M events (some 25 GB in PostgreSQL with
its indexes, and a copy for the job), where a nightly's fixed cost no longer hides what it does per
row. The same two nights as B4, the job against the same hand-written script.

Not part of a plain `python -m bench` (generating its shop alone takes tens of minutes on two
cores): `make bench-large` runs it.
The big shop's real-time segments are not evaluated for everyone first (a consumer's first pass
over ten million customers takes longer than the rest of the figure): the stream's membership
starts empty, so the job's parity check and the script's count of the difference both compare
with nothing, each the same work.
"""

from __future__ import annotations

from bench.harness import Lab
from bench.nightly import nights_figure, two_nights

FIGURES = ("B4L",)
ON_REQUEST = True
# B4's history times this
SIZE = 10
GOAL = 1.5


def measure(lab: Lab) -> dict[str, dict]:
    shop = lab.shop(lab.scale.history_customers * SIZE, settle=False)
    return {"B4L": nights_figure(two_nights(lab, shop, "nightly-large", last_use=True),
                                 goal=GOAL)}
