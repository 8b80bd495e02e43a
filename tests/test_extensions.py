"""DuckDB's extensions load from the installed wheels, with automatic installs off: nothing is
downloaded at run time."""

from __future__ import annotations

import duckdb

from segops import extensions


def test_ducklake_postgres_and_httpfs_load_from_the_wheels(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    extensions.extension_directory.cache_clear()
    try:
        con = duckdb.connect(config=extensions.duckdb_config())
        con.execute("load postgres_scanner")
        con.execute("load httpfs")
        con.execute(f"attach 'ducklake:{tmp_path}/catalog.ducklake' as lake "
                    f"(data_path '{tmp_path}/lake/')")
        con.execute("create table lake.events as select 'ann' as customer_id")
        assert con.execute("select customer_id from lake.events").fetchall() == [("ann",)]
        loaded = {name for (name,) in con.execute(
            "select extension_name from duckdb_extensions() where loaded").fetchall()}
        assert {"ducklake", "postgres_scanner", "httpfs"} <= loaded
        assert str(tmp_path / "cache") in extensions.duckdb_config()["extension_directory"]
        assert extensions.duckdb_config()["autoinstall_known_extensions"] is False
    finally:
        extensions.extension_directory.cache_clear()
