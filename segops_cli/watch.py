"""`segops preview FILE --watch`: the preview again on every save of the file.

The dbt project is parsed once, so each save costs a compile (a fraction of a second) and the
evaluation; each result says who entered and who left since the previous save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from segops.clock import utc_now
from segops.errors import SegOpsError
from segops.files import file_version
from segops.preview import PreviewResult, Target, compile_inline, parse_project, run_preview
from segops.settings import Settings

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Save:
    result: PreviewResult
    entered: frozenset[str] | None  # since the previous save; None for the first
    left: frozenset[str] | None


def watch(settings: Settings, path: Path, *, on_save: Callable[[Save], None],
          on_error: Callable[[str], None], stop: threading.Event,
          clock: Callable[[], datetime] = utc_now) -> None:
    """Preview `path` now and after every change to it, until `stop` is set."""
    manifest = parse_project(settings)
    seen, previous = None, None
    while not stop.is_set():
        version = file_version(path)
        if version != seen:
            seen = version
            try:
                sql = compile_inline(settings, path.read_text(), where=str(path),
                                     own_file=path, manifest=manifest)
                result = run_preview(settings, Target(path.stem, sql, None), clock(),
                                     keep_members=True)
            except (SegOpsError, OSError) as error:
                on_error(str(error))
            else:
                members = result.members or frozenset()
                on_save(Save(result, *((members - previous, previous - members)
                                       if previous is not None else (None, None))))
                previous = members
        stop.wait(POLL_SECONDS)
