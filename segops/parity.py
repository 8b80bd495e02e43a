"""The parity invariant: the stream's membership equals a batch evaluation at the same "now"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SAMPLE = 5


@dataclass(frozen=True)
class Drift:
    segment: str
    evaluated_at: datetime
    batch_size: int
    missing: list[str]  # the batch says in, the membership table says out
    unexpected: list[str]  # the membership table says in, the batch says out
    missing_count: int
    unexpected_count: int

    @property
    def total(self) -> int:
        return self.missing_count + self.unexpected_count
