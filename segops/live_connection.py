"""Connecting to the live state's PostgreSQL, with a sentence that says what to do, rather
than a driver's traceback, when it is not there."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from segops.errors import SegOpsError


class PostgresUnreachable(SegOpsError):
    """The PostgreSQL named by SEGOPS_POSTGRES_DSN refused or did not answer."""

    reason = ""  # the driver's own words, for a log line that already names PostgreSQL


def unreachable(dsn: str, error: Exception) -> PostgresUnreachable:
    parts = conninfo_to_dict(dsn)
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
    reason = first_line(error)
    problem = PostgresUnreachable(
        f"cannot reach PostgreSQL at {where} (SEGOPS_POSTGRES_DSN): {reason}; start it "
        "(`make up` starts the project's own, under data/postgres) or correct the DSN")
    problem.reason = reason
    return problem


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0]


def connect(dsn: str | None, **options) -> psycopg.Connection:
    try:
        return psycopg.connect(required(dsn), **options)
    except psycopg.OperationalError as error:
        raise unreachable(dsn, error) from None


class PostgresNotConfigured(PostgresUnreachable):
    """No PostgreSQL is named, and the project's own is not running."""


def required(dsn: str | None) -> str:
    """`dsn`, or a sentence that says how to get one where a command first needs it (so the
    commands that never touch the live state still run without it)."""
    if not dsn:
        raise PostgresNotConfigured(
            "no PostgreSQL for the live state: set SEGOPS_POSTGRES_DSN, or start the project's "
            "own (`make up`, or `segops up`, keeps it under data/postgres)")
    return dsn
