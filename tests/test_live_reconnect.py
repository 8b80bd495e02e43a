"""A consumer whose PostgreSQL session dies (a restart, an administrator) opens another and goes
on: the batch is done again, the leases, which were the old session's locks, are taken again."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from segops.live_leases import SWEEP
from streaming.stream_loop import Stopped
from tests.live_helpers import NOW, started, views
from tests.stream_helpers import incoming, members, rows, wait_for


def terminate(dsn: str, pid: int) -> None:
    """End a session from another one, as a server restart ends every session."""
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute("select pg_terminate_backend(%s)", [pid])


def holds_sweep(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn) as con:
        return con.execute("select exists (select from pg_locks where locktype = 'advisory' "
                           "and objid = %s and pid = %s and granted)", [SWEEP, pid]
                           ).fetchone()[0]


def test_a_batch_after_the_session_died_is_stored_on_a_new_one_with_the_leases(live_shop,
                                                                                  caplog):
    with started(live_shop, clock=lambda: NOW) as consumer:
        consumer.process([incoming(e) for e in views("ann", 10)])
        first = consumer.pg.info.backend_pid
        assert holds_sweep(live_shop.postgres_dsn, first)
        terminate(live_shop.postgres_dsn, first)

        with caplog.at_level(logging.WARNING):
            batch = [incoming(e) for e in views("bob", 10)]
            outcome = consumer.surviving(lambda: consumer.process(batch))

        second = consumer.pg.info.backend_pid
        assert second != first
        assert outcome.stored == 3
        assert holds_sweep(live_shop.postgres_dsn, second), "the sweep lease, taken again"
    assert rows(live_shop, "select count(*) from raw.events") == [(6,)]
    assert set(members(live_shop, "high_intent_browsers")) >= {"ann", "bob"}
    assert "PostgreSQL unreachable (terminating connection" in caplog.text
    assert "PostgreSQL is back after" in caplog.text


def test_asked_to_stop_while_postgres_is_away_commits_nothing(live_shop):
    """A stop (SIGTERM) must not wait for the server: the batch stays unacked, for
    redelivery."""
    with started(live_shop, clock=lambda: NOW) as consumer:
        terminate(live_shop.postgres_dsn, consumer.pg.info.backend_pid)
        consumer.stop()
        with pytest.raises(Stopped):
            consumer.surviving(lambda: consumer.process([incoming(e)
                                                         for e in views("ann", 10)]))
    assert rows(live_shop, "select count(*) from raw.events") == [(0,)]


def test_an_error_of_a_server_that_still_answers_is_raised_not_waited_out(live_shop):
    """Out of shared memory, a statement timeout: the server is there, so waiting for it to
    come back would retry the same failure for ever."""
    with started(live_shop, clock=lambda: NOW) as consumer:
        consumer.pg.execute("set statement_timeout = 1")
        with pytest.raises(psycopg.errors.QueryCanceled):
            consumer.surviving(lambda: consumer.pg.execute("select pg_sleep(1)"))


def test_a_deadlock_with_another_writer_is_done_again_at_once(live_shop, caplog):
    """PostgreSQL undoes one of two transactions that wait for each other; the consumer does
    its own again, neither stopping nor calling it an outage."""
    attempts: list[int] = []
    with started(live_shop, clock=lambda: NOW) as consumer, \
            psycopg.connect(live_shop.postgres_dsn, autocommit=True) as other:
        consumer.pg.execute("set deadlock_timeout = '10ms'")  # the consumer is the one undone
        holds_two = threading.Event()

        def other_writer() -> None:
            with other.transaction():
                other.execute("select pg_advisory_xact_lock(2)")
                holds_two.set()
                other.execute("select pg_advisory_xact_lock(1)")

        writer = threading.Thread(target=other_writer)

        def work() -> int:
            attempts.append(1)
            with consumer.pg.transaction():
                consumer.pg.execute("select pg_advisory_xact_lock(1)")
                if len(attempts) == 1:
                    writer.start()
                    holds_two.wait(10)
                    wait_for(lambda: waiting_for_a_lock(live_shop.postgres_dsn))
                consumer.pg.execute("select pg_advisory_xact_lock(2)")
            return len(attempts)

        with caplog.at_level(logging.INFO):
            assert consumer.surviving(work) == 2
        writer.join(10)
    assert "undid a transaction (deadlock detected)" in caplog.text
    assert "unreachable" not in caplog.text


def waiting_for_a_lock(dsn: str) -> bool:
    with psycopg.connect(dsn) as con:
        return con.execute("select exists (select from pg_locks where locktype = 'advisory' "
                           "and not granted)").fetchone()[0]
