"""Shared fixtures: every test gets its own warehouse file and dbt target directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from segops.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at a fresh warehouse and dbt target under this test's tmp dir."""
    monkeypatch.setenv("SEGOPS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SEGOPS_DBT_TARGET_DIR", str(tmp_path / "target"))
    return load_settings()
