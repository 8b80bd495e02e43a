"""A dbt-duckdb plugin that pins `segops_now()` to SEGOPS_NOW on every connection dbt opens.

A pinned "now" reaches dbt's SQL as the session variable the macro already honours, not as a
dbt var: dbt re-parses the whole project whenever its vars change, and every pinned run
brings a new one (3 s of a nightly run at the project's size).
"""

from __future__ import annotations

from dbt.adapters.duckdb.plugins import BasePlugin

from segops.clock import pinned_now, set_session_now


class Plugin(BasePlugin):
    def configure_cursor(self, cursor):
        if (now := pinned_now()) is not None:
            set_session_now(cursor, now)
