"""Membership out of the warehouse: current or point-in-time, as CSV, JSON or Parquet."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from segops.catalog import Catalog
from segops.errors import SegOpsError
from segops.live_state import read_live_state
from segops.membership import current_members, members_at
from segops.settings import Settings

FORMATS = ("csv", "json", "parquet")


def membership_frame(settings: Settings, segment: str, at: datetime | None) -> pd.DataFrame:
    Catalog.load(settings.manifest_path).segment(segment)
    with read_live_state(settings.postgres_dsn) as con:
        if at is None:
            return current_members(con, segment)
        return members_at(con, segment, at)


def write_members(frame: pd.DataFrame, fmt: str, output: Path | None) -> None:
    """Write to `output`, or to standard output for the text formats."""
    if fmt == "parquet":
        if output is None:
            raise SegOpsError("parquet is binary: give --output PATH")
        frame.to_parquet(output, index=False)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        records = [
            {**row, "attributes": json.loads(row["attributes"]) if row["attributes"] else None}
            for row in frame.to_dict(orient="records")
        ]
        text = json.dumps(records, default=str, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
