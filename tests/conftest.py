"""Shared fixtures: every test gets its own warehouse file and dbt target directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from segops.emulator import EmulatorUnavailable, PubSubEmulator
from segops.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at a fresh warehouse and dbt target under this test's tmp dir."""
    monkeypatch.setenv("SEGOPS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SEGOPS_DBT_TARGET_DIR", str(tmp_path / "target"))
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


@pytest.fixture
def pubsub(pubsub_emulator: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose Pub/Sub project is fresh for this test, on the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    monkeypatch.setenv("SEGOPS_PROJECT", f"test-{uuid.uuid4().hex[:12]}")
    return load_settings()
