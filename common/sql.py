"""The SQL runner of the hot paths (a bridge event, the outbox's inserts): statements built
from the models' metadata and run as server-side prepared statements on Django's connection.

It relies on three Django internals: `connection.connection` is the psycopg 3 connection Django
opened, `connection.cursor()` sets the tenant's search_path (django-tenants) before a statement,
and `connection.wrap_database_errors` turns psycopg's errors into Django's (IntegrityError...).
calls/tests/test_sql.py checks the first two (prepared once, in the right tenant's schema);
the API's reused-event_id tests (calls/tests/test_api_events.py) check the third.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

import psycopg
from django.db import connection
from django.db.models import Field, ForeignObjectRel, JSONField, Model

_T = TypeVar("_T")


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], name: str) -> str:
    return _quoted_column(model._meta.get_field(name))


def _quoted_column(field: Field[Any, Any] | ForeignObjectRel) -> str:
    # Only concrete fields have a column: Django leaves `column` None on the others, and the
    # reverse side of a relation has none at all. Every name given here is a concrete field's.
    if isinstance(field, ForeignObjectRel) or field.column is None:
        raise ValueError(f"{field} has no column")
    return connection.ops.quote_name(field.column)


def fetchone(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Runs a statement as a server-side prepared statement (PostgreSQL plans it once per
    connection and search_path, not per event) and returns its first row.

    Django opens connections with prepared statements off unless OPTIONS sets
    `prepare_threshold` (settings.py does, from DATABASE_PREPARED_STATEMENTS). When they are
    off, psycopg ignores `prepare=True` and PostgreSQL parses and plans the statement for every
    event."""
    return _execute(sql, params, psycopg.Cursor.fetchone)


def fetchall(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """As `fetchone`, every row."""
    return _execute(sql, params, psycopg.Cursor.fetchall)


def _execute(sql: str, params: Sequence[Any], fetch: Callable[[psycopg.Cursor], _T]) -> _T:
    with connection.cursor():
        pass  # connects, and sets the tenant's search_path (django-tenants)
    with connection.wrap_database_errors:
        cursor = _cursor(connection.connection)
        cursor.execute(sql, params, prepare=True)  # every statement here returns rows
        return fetch(cursor)


# A cursor's adapters remember how to dump and load each type; a new cursor per statement
# looked them all up again. Kept per thread, as Django keeps its connections.
_local = threading.local()


def _cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    cursor = getattr(_local, "cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = _local.cursor = psycopg.Cursor(raw)
    return cursor


def pk_column(model: type[Model]) -> str:
    return _quoted_column(model._meta.pk)


def prepared(model: type[Model], values: dict[str, Any]) -> list[Any]:
    """The values as query parameters. Only JSON needs the field's adaptation: psycopg takes
    strings, numbers, aware datetimes and None as they are (and the fields' own preparation of
    each value cost more than the statement's planning)."""
    json_fields = _json_fields(model)
    return [
        json_fields[name].get_db_prep_save(value, connection) if name in json_fields else value
        for name, value in values.items()
    ]


@cache
def _json_fields(model: type[Model]) -> dict[str, Any]:
    return {f.name: f for f in model._meta.concrete_fields if isinstance(f, JSONField)}


@cache
def _insert_sql(model: type[Model], unique: tuple[str, ...]) -> str:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(_quoted_column(f) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = ", ".join(column(model, name) for name in unique)
    return (
        f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {pk_column(model)}"
    )


def instance_insert(instance: Model, *, unique: tuple[str, ...]) -> bool:
    """Inserts the new instance unless a row with the same `unique` fields exists (then
    returns False): one statement, no savepoint. An inserted row stays locked by this
    transaction; a concurrent insert of the same key waits for it to end."""
    model = type(instance)
    values = [
        f.get_db_prep_save(f.pre_save(instance, True), connection)
        for f in model._meta.concrete_fields
        if not f.primary_key
    ]
    row = fetchone(_insert_sql(model, unique), values)
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return True
