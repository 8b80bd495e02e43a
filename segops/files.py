"""Noticing that a file the stream runs on (the dbt manifest, the tracking plan) changed."""

from __future__ import annotations

from pathlib import Path


def file_version(path: Path) -> tuple[int, int] | None:
    """Modification time and size: a rewrite changes one or the other, even within a tick."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size
