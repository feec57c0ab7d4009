"""A worker keeps its database connection from task to task (simtrix.celery): Celery's own
fixup would close it after every task, and each run would connect anew."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import psycopg
from django.conf import settings
from django.db import connection

from simtrix.celery import _database_connections_tidy, app


def _fresh_backend_pid() -> int:
    """A connection opened now: one the suite opened minutes ago is past CONN_MAX_AGE, and
    the tidy-up rightly closes it."""
    connection.close()
    return _backend_pid()


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _task(*, eager: bool) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def test_celery_is_told_to_reuse_connections() -> None:
    # Read by celery.fixups.django.DjangoWorkerFixup; without it, it closes after each task.
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX >= 100


def test_a_workers_connection_outlives_its_task_and_a_broken_one_is_replaced(
    committed_db: Callable[[Callable[[], None]], None],
) -> None:
    first = _fresh_backend_pid()
    _database_connections_tidy(task=_task(eager=False))
    assert _backend_pid() == first  # the next task's queries on the same connection

    # The server ends the connection between two tasks (a restart, an idle timeout).
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [first])
    _database_connections_tidy(task=_task(eager=False))
    replaced = _backend_pid()  # CONN_HEALTH_CHECKS: checked before reuse, reconnected
    assert replaced != first

    connection.close_at = time.monotonic() - 1  # older than CONN_MAX_AGE: not kept longer
    _database_connections_tidy(task=_task(eager=False))
    assert connection.connection is None


def test_a_connection_left_inside_a_transaction_is_not_reused(
    committed_db: Callable[[Callable[[], None]], None],
) -> None:
    first = _fresh_backend_pid()
    connection.set_autocommit(False)  # a task that left a transaction open
    _database_connections_tidy(task=_task(eager=True))
    assert _backend_pid() == first  # an eager task's connection is its caller's: left alone
    _database_connections_tidy(task=_task(eager=False))
    assert connection.connection is None  # closed, not handed to the next task
    assert _backend_pid() != first
