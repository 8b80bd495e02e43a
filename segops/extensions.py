"""DuckDB's extensions from the wheels pip installed, never downloaded at run time.

The `duckdb-extension-<name>` wheels hold each extension's file; DuckDB looks for extensions in
a folder laid out as `<version>/<platform>/<name>.duckdb_extension`. `extension_directory()`
builds that folder once, with links to the wheels' files, and `duckdb_config()` is the
configuration every SegOps connection opens with: that folder, and no automatic install.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import duckdb

from segops.errors import SegOpsError
from segops.live_connection import required, unreachable
from segops.sql import literal

# wheel name → the name the extension loads as (the postgres extension is `postgres_scanner`);
# httpfs reads and writes a lake's files on GCS or S3 (`SEGOPS_LAKE_DATA_PATH=gs://…`)
WHEELS = {"ducklake": "ducklake", "postgres": "postgres_scanner", "httpfs": "httpfs"}


class ExtensionMissing(SegOpsError):
    """An extension's wheel is not installed."""


@cache
def extension_directory() -> Path:
    """The folder DuckDB loads extensions from, under the user's cache (built on first use)."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache_home / "segops" / "duckdb-extensions"
    version = f"v{duckdb.__version__}"
    platform = duckdb.connect().execute("pragma platform").fetchone()[0]
    folder = root / version / platform
    folder.mkdir(parents=True, exist_ok=True)
    for wheel, name in WHEELS.items():
        link = folder / f"{name}.duckdb_extension"
        target = _wheel_file(wheel, version)
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        partial = link.with_suffix(f".{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        partial.symlink_to(target)
        partial.replace(link)  # another process building the same folder never sees a gap
    return root


def duckdb_config() -> dict[str, str | bool]:
    return {"extension_directory": str(extension_directory()),
            "autoinstall_known_extensions": False}


def attach_postgres(con: duckdb.DuckDBPyConnection, dsn: str, *, read_only: bool) -> None:
    """Attach the PostgreSQL `dsn` as catalog `live`, its extension loaded from the wheel (also
    on a connection opened without `duckdb_config`, such as the warehouse's)."""
    con.execute(f"set extension_directory = {literal(str(extension_directory()))}")
    con.execute("load postgres_scanner")
    mode = ", read_only" if read_only else ""
    try:
        con.execute(f"attach {literal(required(dsn))} as live (type postgres{mode})")
    except duckdb.IOException as error:
        raise unreachable(dsn, error) from None


def _wheel_file(wheel: str, version: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{wheel}")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionMissing(f"the duckdb-extension-{wheel} wheel is not installed")
    path = (Path(spec.submodule_search_locations[0]) / "extensions" / version
            / f"{wheel}.duckdb_extension")
    if not path.exists():
        raise ExtensionMissing(f"duckdb-extension-{wheel} has no extension for DuckDB {version}")
    return path
