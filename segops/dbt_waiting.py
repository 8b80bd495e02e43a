"""A dbt-duckdb plugin by which dbt, too, says when it waits for the warehouse.

The streaming consumer holds the warehouse while events flow and gives it up when another
process leaves a waiter marker beside the file. dbt opens the file itself, so this plugin
leaves the marker just before dbt's connection attempts and removes it once dbt is connected.
"""

from __future__ import annotations

from pathlib import Path

from dbt.adapters.duckdb.plugins import BasePlugin

from segops.warehouse import mark_waiting


class Plugin(BasePlugin):
    def initialize(self, plugin_config):
        self._marker: Path | None = None

    def update_connection_config(self, creds, config):
        if creds.path and creds.path != ":memory:":
            self._marker = mark_waiting(Path(creds.path))

    def configure_connection(self, conn):
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            self._marker = None
