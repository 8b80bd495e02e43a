"""Shared fixtures: a PostgreSQL server and the Pub/Sub emulator for the session, and for every
test its own database, lake folder, Pub/Sub project and dbt target directory; no test touches
the user's own `data/` (their PostgreSQL, lake and Dagster instance)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from demo.emulator import EmulatorUnavailable, PubSubEmulator
from demo.postgres import temporary_postgres
from segops.dbt import compile_segments
from segops.live_schema import ensure_live_schema
from segops.settings import PROJECT_ROOT, Settings, load_settings
from tests.live_helpers import NOW

USER_DATA = PROJECT_ROOT / "data"
RUN_SCRATCH = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Point every default the tests might fall back on away from `data/`: no PostgreSQL unless
    a test names one (not the user's own server, which settings find by themselves), a lake and
    a Dagster home of the run's own (`make` exports the user's)."""
    scratch = config.stash[RUN_SCRATCH] = Path(tempfile.mkdtemp(prefix="segops-tests-"))
    os.environ["SEGOPS_POSTGRES_DSN"] = ""
    os.environ["SEGOPS_LAKE_DATA_PATH"] = f"{scratch / 'lake'}/"
    os.environ["DAGSTER_HOME"] = str(scratch / "dagster")
    (scratch / "dagster").mkdir()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash[RUN_SCRATCH], ignore_errors=True)


def _user_data_state() -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(USER_DATA)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in USER_DATA.rglob("*") if path.is_file()
    } if USER_DATA.exists() else {}


@pytest.fixture(scope="session", autouse=True)
def user_data_untouched() -> Iterator[None]:
    """Fails the run if any test created, changed or removed a file under `data/`."""
    before = _user_data_state()
    yield
    after = _user_data_state()
    changed = sorted(name for name in before.keys() | after.keys()
                     if before.get(name) != after.get(name))
    assert not changed, f"tests touched the user's data/: {changed[:10]}"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at a lake folder and dbt target under this test's tmp dir (no
    PostgreSQL: the fixtures below add one)."""
    monkeypatch.setenv("SEGOPS_LAKE_DATA_PATH", f"{tmp_path / 'lake'}/")
    monkeypatch.setenv("SEGOPS_DBT_TARGET_DIR", str(tmp_path / "target"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # runs a test starts stay ephemeral
    return load_settings()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """Google's Pub/Sub emulator on a free port; a CI run fails rather than skips without it."""
    emulator = PubSubEmulator()
    try:
        host = emulator.start()
    except EmulatorUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Pub/Sub emulator must run in CI: {error}")
        pytest.skip(f"Pub/Sub emulator unavailable: {error}")
    try:
        yield host
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The project's own PostgreSQL for the session, with a template database holding the live
    tables; its DSN."""
    with temporary_postgres("segops-tests-postgres-") as server:
        with psycopg.connect(server.dsn, autocommit=True) as con:
            con.execute("create database live_template")
        with psycopg.connect(database_dsn(server.dsn, "live_template")) as con:
            ensure_live_schema(con)
        yield server.dsn


@pytest.fixture
def live_dsn(postgres_server: str) -> str:
    """A database of this test's own, made from the template (tens of milliseconds)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f"create database {name} template live_template")
    return database_dsn(postgres_server, name)


def database_dsn(dsn: str, database: str) -> str:
    return dsn.replace("dbname=postgres", f"dbname={database}")


@pytest.fixture
def pubsub(pubsub_emulator: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose Pub/Sub project is fresh for this test, on the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    monkeypatch.setenv("SEGOPS_PROJECT", f"test-{uuid.uuid4().hex[:12]}")
    return load_settings()


@pytest.fixture(scope="session")
def compiled_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The segments' manifest, compiled once in memory as `make manifest` does: what the stream,
    preview and the live fixtures read, with no warehouse built."""
    target = tmp_path_factory.mktemp("compiled") / "target"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGOPS_DBT_TARGET_DIR", str(target))
        compile_segments(load_settings())
    return target / "manifest.json"


@pytest.fixture
def manifest(settings: Settings, compiled_manifest: Path) -> Settings:
    """Settings with this test's own copy of the compiled manifest."""
    settings.dbt_target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(compiled_manifest, settings.manifest_path)
    return settings


@pytest.fixture
def live(manifest: Settings, pubsub: Settings, live_dsn: str,
         monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for the stream on PostgreSQL: this test's database, Pub/Sub project and
    manifest; consumer processes it starts inherit them."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    return load_settings()


@pytest.fixture
def live_shop(manifest: Settings, live_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with the live state in this test's PostgreSQL database and the models in a
    lake cataloged there, the clock pinned at live_helpers.NOW; no Pub/Sub."""
    monkeypatch.setenv("SEGOPS_POSTGRES_DSN", live_dsn)
    monkeypatch.setenv("SEGOPS_NOW", NOW.isoformat())
    return load_settings()


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's table of counts, whenever its scenarios ran."""
    from tests.chaos_helpers import report

    report(terminalreporter.write)
