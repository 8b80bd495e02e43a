"""`make demo`: the whole product once, on the stores it runs on in production, started here.

A generated shop goes into the project's own PostgreSQL (`data/postgres`, a fresh database each
time) with the Pub/Sub emulator beside it; the nightly job copies its history into the lake
(`data/lake`), builds every model there and writes the nightly segments; the real-time story
streams through a consumer; the segments are listed with a sample of members. No warehouse file
is written. With SEGOPS_POSTGRES_DSN set, that database is used as it is and a shop generated
only if it holds none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rich.console import Console

from demo.platform import BIN, local_services
from segops.settings import PROJECT_ROOT, Settings


def run_tour(settings: Settings, console: Console, *, customers: int) -> None:
    own_database = "SEGOPS_POSTGRES_DSN" not in os.environ
    with local_services(console, fresh=own_database) as env:
        if own_database and not settings.lake_data_path.startswith(("gs://", "s3://")):
            shutil.rmtree(Path(settings.lake_data_path), ignore_errors=True)  # the old catalog's
        segops = [str(BIN / "segops")]
        for command in (
            ["init"],
            ["generate", "--customers", str(customers), *([] if own_database else ["--if-empty"])],
            ["nightly"],
            ["story"],
            ["segments", "--sample", "3"],
        ):
            subprocess.run([*segops, *command], env=env, cwd=PROJECT_ROOT, check=True)
