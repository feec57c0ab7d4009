"""The statements of the bridge's hot path (every bridge event), as SQL built from the models.

Recording one event used to take ten ORM statements. On a 2-core server the ORM's query
compilation (about 0.5 ms a statement) and the round trips cost more than the work itself, so an
event of a known call takes two statements: read everything it needs (the call with its stored
events, runs, planned phases and recording) in one; write the call's changes, the event and its
transition in one, only if the call's `version` is still the one read (optimistic concurrency:
no row lock, unless the event also routes or plans). A new call is inserted with
`ON CONFLICT DO NOTHING` (no savepoint). Table and column names come from the models' metadata,
and JSON values (all values, for inserted instances) go through the fields' own
`get_db_prep_save`, so the SQL follows the models.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from django.db import connection
from django.db.models import JSONField, Model
from django.utils import timezone

from calls.models import Call, CallEvent, CallRecording, CallTransition


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _fetchone(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Runs a statement of this module as a server-side prepared statement (PostgreSQL plans
    it once per connection and search_path, not per event) and returns its first row.

    Django opens connections with prepared statements off unless OPTIONS sets
    `prepare_threshold` (settings.py does, from DATABASE_PREPARED_STATEMENTS). When they are
    off, psycopg ignores `prepare=True` and PostgreSQL parses and plans the statement for every
    event."""
    with connection.cursor():
        pass  # connects, and sets the tenant's search_path (django-tenants)
    with connection.wrap_database_errors:
        cursor = _cursor(connection.connection)
        cursor.execute(sql, params, prepare=True)  # every statement here returns rows
        return cursor.fetchone()


# A cursor's adapters remember how to dump and load each type; a new cursor per statement
# looked them all up again. Kept per thread, as Django keeps its connections.
_local = threading.local()


def _cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    cursor = getattr(_local, "cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = _local.cursor = psycopg.Cursor(raw)
    return cursor


def _pk(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.pk.column)


def _prepared(model: type[Model], values: dict[str, Any]) -> list[Any]:
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


_CALL_FIELDS = tuple(Call._meta.concrete_fields)
_CALL_ATTNAMES = [f.attname for f in _CALL_FIELDS]
# What converts each column's value as read (the JSON fields), looked up once, not per event.
_CALL_CONVERTERS = tuple(getattr(f, "from_db_value", None) for f in _CALL_FIELDS)


@dataclass
class CallSnapshot:
    """A call as an event read it (or created it), with what the event needs to know of it."""

    call: Call
    created: bool = False
    stored_events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    planned: set[str] = field(default_factory=set)


# What the call resource shows of a run, and its dedupe_key (planning reads it).
RUN_COLUMNS = ("action_type", "status", "due_at", "done_at", "result", "dedupe_key")


def _runs_json(call_id: str) -> str:
    """An expression: the call's runs as a JSON array, oldest first."""
    from scenarios.models import ActionRun

    run_object = ", ".join(f"'{name}', r.{_column(ActionRun, name)}" for name in RUN_COLUMNS)
    return (
        f"(SELECT COALESCE(json_agg(json_build_object({run_object}) ORDER BY r.{_pk(ActionRun)}),"
        f" '[]'::json) FROM {_table(ActionRun)} r WHERE r.{_column(ActionRun, 'call')} = {call_id})"
    )


def _runs_parsed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for run in runs:
        run["due_at"], run["done_at"] = _timestamp(run["due_at"]), _timestamp(run["done_at"])
    return runs


@cache
def _runs_sql() -> str:
    return f"SELECT {_runs_json('%s')}"


def call_runs_read(*, call_id: int) -> list[dict[str, Any]]:
    """The call's runs (RUN_COLUMNS), oldest first."""
    row = _fetchone(_runs_sql(), [call_id])
    return _runs_parsed(row[0] if row else [])


@cache
def _read_sql() -> str:
    from scenarios.models import CallPlan

    columns = ", ".join(f"c.{connection.ops.quote_name(f.column)}" for f in _CALL_FIELDS)
    event = {name: f"e.{_column(CallEvent, name)}" for name in ("event_id", "type", "occurred_at")}
    return f"""
        SELECT {columns},
            rec.{_column(CallRecording, "id")},
            rec.{_column(CallRecording, "uploaded_at")},
            rec.{_column(CallRecording, "original_format")},
            (SELECT COALESCE(json_agg(json_build_object(
                    'event_id', {event["event_id"]}, 'type', {event["type"]},
                    'occurred_at', {event["occurred_at"]}, 'body', e.{_column(CallEvent, "body")}
                )), '[]'::json)
             FROM {_table(CallEvent)} e WHERE e.{_column(CallEvent, "call")} = c.{_pk(Call)}),
            {_runs_json(f"c.{_pk(Call)}")},
            ARRAY(SELECT p.{_column(CallPlan, "phase")} FROM {_table(CallPlan)} p
                  WHERE p.{_column(CallPlan, "call")} = c.{_pk(Call)})
        FROM {_table(Call)} c
        LEFT JOIN {_table(CallRecording)} rec
            ON rec.{_column(CallRecording, "call")} = c.{_pk(Call)}
        WHERE c.{_column(Call, "device")} = %s AND c.{_column(Call, "call_id")} = %s
    """


def _call_from_row(row: Sequence[Any]) -> Call:
    values = [
        value if convert is None else convert(value, None, connection)
        for convert, value in zip(_CALL_CONVERTERS, row, strict=False)
    ]
    return Call.from_db(connection.alias, _CALL_ATTNAMES, values)


def _timestamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def call_read(*, device_id: int, call_id: str) -> CallSnapshot | None:
    """The call as it is now (no lock: its `version` tells event_record whether it is still
    so), or None if it does not exist yet."""
    row = _fetchone(_read_sql(), [device_id, call_id])
    if row is None:
        return None
    width = len(_CALL_FIELDS)
    call = _call_from_row(row)
    recording_id, uploaded_at, original_format, events, runs, planned = row[width:]
    recording = None
    if recording_id is not None:
        known = {
            "id": recording_id,
            "call_id": call.pk,
            "uploaded_at": uploaded_at,
            "original_format": original_format,
        }
        # from_db takes a subset of the fields in the model's field order.
        names = [f.attname for f in CallRecording._meta.concrete_fields if f.attname in known]
        recording = CallRecording.from_db(connection.alias, names, [known[n] for n in names])
    Call.recording.related.set_cached_value(call, recording)
    for event in events:
        event["occurred_at"] = datetime.fromisoformat(event["occurred_at"])
    return CallSnapshot(
        call=call, stored_events=events, runs=_runs_parsed(runs), planned=set(planned)
    )


@cache
def _insert_sql(model: type[Model], unique: tuple[str, ...]) -> str:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = ", ".join(_column(model, name) for name in unique)
    return (
        f"INSERT INTO {_table(model)} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {_pk(model)}"
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
    row = _fetchone(_insert_sql(model, unique), values)
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return True


def call_new(*, device_id: int, call_id: str) -> Call:
    """A call not stored yet (call_insert stores it, with what its first event says)."""
    call = Call(device_id=device_id, call_id=call_id)
    Call.recording.related.set_cached_value(call, None)  # a new call has no recording yet
    return call


@cache
def _lock_sql() -> str:
    return f"SELECT {_pk(Call)} FROM {_table(Call)} WHERE {_pk(Call)} = %s FOR UPDATE"


def call_lock(*, call: Call) -> None:
    """Row-locks the call until the transaction ends: an event that routes or plans takes the
    call's lock before a round-robin cursor or a run, in the order the outbox handlers take
    them (call first), so the two cannot deadlock."""
    _fetchone(_lock_sql(), [call.pk])


def call_insert(call: Call) -> bool:
    """Stores the new call (locked by this transaction until it ends); False if it exists
    already, e.g. created meanwhile by a concurrent event of the same call."""
    return instance_insert(call, unique=("device", "call_id"))


def event_record(
    *,
    call: Call,
    changed: list[str] | None,
    event: dict[str, Any],
    transition: dict[str, Any] | None,
) -> bool:
    """One statement: the call's changed columns, the event as received, and its transition,
    if the call's `version` is still `call.version` (returns False and writes nothing if not).
    A call inserted by this transaction (`changed` is None) is not updated.

    A reused event_id fails the event's unique constraint, and with it the whole statement."""
    now = timezone.now()
    params: list[Any] = []
    updates: dict[str, Any] | None = None
    if changed is not None:
        updates = {name: getattr(call, name) for name in changed}
        if changed:
            updates["updated_at"] = now
        params += [*_prepared(Call, updates), call.pk, call.version]
    params += _prepared(CallEvent, {**event, "call": call.pk, "received_at": now})
    if transition is not None:
        params += _prepared(CallTransition, {**transition, "call": call.pk, "at": now})
    sql = _record_sql(
        tuple(updates) if updates is not None else None,
        tuple(event),
        tuple(transition) if transition is not None else None,
    )
    if _fetchone(sql, params) is None:
        return False
    if changed:
        call.updated_at = now
    if changed is not None:
        call.version += 1
    return True


@cache
def _record_sql(
    updates: tuple[str, ...] | None, event: tuple[str, ...], transition: tuple[str, ...] | None
) -> str:
    parts = []
    event_names = [*event, "call", "received_at"]
    values = ", ".join(["%s"] * len(event_names))
    if updates is None:
        source = f"VALUES ({values})"
    else:
        version = _column(Call, "version")
        assignments = ", ".join(
            [*(f"{_column(Call, name)} = %s" for name in updates), f"{version} = {version} + 1"]
        )
        parts.append(
            f"updated AS (UPDATE {_table(Call)} SET {assignments} "
            f"WHERE {_pk(Call)} = %s AND {version} = %s RETURNING {_pk(Call)})"
        )
        source = f"SELECT {values} FROM updated"
    insert_event = (
        f"INSERT INTO {_table(CallEvent)} "
        f"({', '.join(_column(CallEvent, name) for name in event_names)}) "
        f"{source} RETURNING {_pk(CallEvent)}"
    )
    if transition is None:
        statement = insert_event
    else:
        parts.append(f"stored AS ({insert_event})")
        names = [*transition, "call", "at"]
        columns = ", ".join(_column(CallTransition, name) for name in names)
        statement = (
            f"INSERT INTO {_table(CallTransition)} "
            f"({columns}, {_column(CallTransition, 'event')}) "
            f"SELECT {', '.join(['%s'] * len(names))}, stored.{_pk(CallEvent)} FROM stored "
            f"RETURNING {_pk(CallTransition)}"
        )
    return f"WITH {', '.join(parts)} {statement}" if parts else statement


@cache
def _stored_sql() -> str:
    columns = ", ".join(
        _column(CallEvent, name)
        for name in ("device", "body_hash", "response_status", "response_body")
    )
    return f"SELECT {columns} FROM {_table(CallEvent)} WHERE {_column(CallEvent, 'event_id')} = %s"


def event_stored(*, event_id: str) -> tuple[int, str, int | None, Any] | None:
    """(device id, body hash, response status, response body) of a stored event, if any."""
    row = _fetchone(_stored_sql(), [event_id])
    if row is None:
        return None
    body_field = CallEvent._meta.get_field("response_body")
    return row[0], row[1], row[2], body_field.from_db_value(row[3], None, connection)
