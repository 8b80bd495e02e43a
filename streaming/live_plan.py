"""The tracking plan the consumer validates with, swapped when the file changes.

A changed plan is logged once, with what changed. A plan that cannot be read (a typo, an unknown
type) is refused whole, with one error naming its line, and the plan in force stays until the
file changes again: a bad edit must not stop the stream.
"""

from __future__ import annotations

import logging
from pathlib import Path

from segops.files import file_version
from segops.tracking_plan import PlanError, TrackingPlan, load_plan

log = logging.getLogger(__name__)


class LivePlan:
    def __init__(self, path: Path):
        self.path = path
        self._version = file_version(self.path)
        self.plan = load_plan(self.path)

    def reload_if_changed(self) -> bool:
        """Swap in a changed, valid plan; whether one was swapped in."""
        version = file_version(self.path)
        if version == self._version:
            return False
        self._version = version
        try:
            plan = load_plan(self.path)
        except PlanError as problem:
            log.error("%s; the tracking plan in force stays until the file changes again",
                      problem)
            return False
        log.info("tracking plan changed: %s", describe_change(self.plan, plan))
        self.plan = plan
        return True


def describe_change(old: TrackingPlan, new: TrackingPlan) -> str:
    said = []
    for verb, names in (("added", new.events.keys() - old.events.keys()),
                        ("removed", old.events.keys() - new.events.keys()),
                        ("changed", {n for n in new.events.keys() & old.events.keys()
                                     if new.events[n] != old.events[n]})):
        if names:
            said.append(f"{verb} {', '.join(sorted(names))}")
    for policy in ("unplanned_events", "violations"):
        if getattr(old, policy) != getattr(new, policy):
            said.append(f"{policy} {getattr(old, policy)} -> {getattr(new, policy)}")
    return "; ".join(said) or "no change to event types or policies"
