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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, TypedDict, cast

from django.db import connection
from django.utils import timezone

from calls.models import Call, CallEvent, CallRecording, CallTransition, Device
from common.sql import column, fetchone, instance_insert, pk_column, prepared, table
from scenarios.models import ActionRun, CallPlan

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
    runs: list[RunRow] = field(default_factory=list)
    planned: set[str] = field(default_factory=set)


class RunRow(TypedDict):
    """One of a call's runs as an event reads it (the call resource shows it; planning reads its
    dedupe_key)."""

    action_type: str
    status: str
    due_at: datetime | None
    done_at: datetime | None
    result: dict[str, Any]
    dedupe_key: str


RUN_COLUMNS = tuple(RunRow.__annotations__)


def _runs_json(call_id: str) -> str:
    """An expression: the call's runs as a JSON array, oldest first."""
    run_object = ", ".join(f"'{name}', r.{column(ActionRun, name)}" for name in RUN_COLUMNS)
    return (
        f"(SELECT COALESCE(json_agg(json_build_object({run_object})"
        f" ORDER BY r.{pk_column(ActionRun)}),"
        f" '[]'::json) FROM {table(ActionRun)} r WHERE r.{column(ActionRun, 'call')} = {call_id})"
    )


def _runs_parsed(runs: list[dict[str, Any]]) -> list[RunRow]:
    """The runs as _runs_json reads them (timestamps as ISO strings), parsed in place."""
    for run in runs:
        run["due_at"], run["done_at"] = _timestamp(run["due_at"]), _timestamp(run["done_at"])
    return cast("list[RunRow]", runs)


@cache
def _runs_sql() -> str:
    return f"SELECT {_runs_json('%s')}"


def call_runs_read(*, call_id: int) -> list[RunRow]:
    """The call's runs (RUN_COLUMNS), oldest first."""
    row = fetchone(_runs_sql(), [call_id])
    return _runs_parsed(row[0] if row else [])


@cache
def _read_sql() -> str:
    # A concrete field has a column.
    columns = ", ".join(f"c.{connection.ops.quote_name(cast(str, f.column))}" for f in _CALL_FIELDS)
    event = {name: f"e.{column(CallEvent, name)}" for name in ("event_id", "type", "occurred_at")}
    return f"""
        SELECT {columns},
            rec.{column(CallRecording, "id")},
            rec.{column(CallRecording, "uploaded_at")},
            rec.{column(CallRecording, "original_format")},
            (SELECT COALESCE(json_agg(json_build_object(
                    'event_id', {event["event_id"]}, 'type', {event["type"]},
                    'occurred_at', {event["occurred_at"]}, 'body', e.{column(CallEvent, "body")}
                )), '[]'::json)
             FROM {table(CallEvent)} e WHERE e.{column(CallEvent, "call")} = c.{pk_column(Call)}),
            {_runs_json(f"c.{pk_column(Call)}")},
            ARRAY(SELECT p.{column(CallPlan, "phase")} FROM {table(CallPlan)} p
                  WHERE p.{column(CallPlan, "call")} = c.{pk_column(Call)})
        FROM {table(Call)} c
        LEFT JOIN {table(CallRecording)} rec
            ON rec.{column(CallRecording, "call")} = c.{pk_column(Call)}
        WHERE c.{column(Call, "device")} = %s AND c.{column(Call, "call_id")} = %s
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
    row = fetchone(_read_sql(), [device_id, call_id])
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


def call_new(*, device_id: int, call_id: str) -> Call:
    """A call not stored yet (call_insert stores it, with what its first event says)."""
    call = Call(device_id=device_id, call_id=call_id)
    Call.recording.related.set_cached_value(call, None)  # a new call has no recording yet
    return call


_DEVICE_FIELDS = tuple(Device._meta.concrete_fields)
_DEVICE_ATTNAMES = [f.attname for f in _DEVICE_FIELDS]
_DEVICE_CONVERTERS = tuple(getattr(f, "from_db_value", None) for f in _DEVICE_FIELDS)


@cache
def _get_sql(*, lock: bool) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(
        [f"c.{quote(cast(str, f.column))}" for f in _CALL_FIELDS]
        + [f"d.{quote(cast(str, f.column))}" for f in _DEVICE_FIELDS]
    )
    return (
        f"SELECT {columns} FROM {table(Call)} c JOIN {table(Device)} d"
        f" ON d.{pk_column(Device)} = c.{column(Call, 'device')}"
        f" WHERE c.{pk_column(Call)} = %s{' FOR UPDATE OF c' if lock else ''}"
    )


def call_get(*, pk: int, lock: bool = False) -> Call:
    """The call with its device, as `Call.objects.select_related("device").get(pk=pk)` reads
    it (`lock`: and row-locks the call, not its device, until the transaction ends), in one
    prepared statement: every run of the outbox reads its call, and compiling the ORM's query
    cost more than running it. Call.DoesNotExist if there is none."""
    row = fetchone(_get_sql(lock=lock), [pk])
    if row is None:
        raise Call.DoesNotExist(f"No call {pk}")
    call = _call_from_row(row[: len(_CALL_FIELDS)])
    values = [
        value if convert is None else convert(value, None, connection)
        for convert, value in zip(_DEVICE_CONVERTERS, row[len(_CALL_FIELDS) :], strict=True)
    ]
    call.device = Device.from_db(connection.alias, _DEVICE_ATTNAMES, values)
    return call


@cache
def _lock_sql() -> str:
    return f"SELECT {pk_column(Call)} FROM {table(Call)} WHERE {pk_column(Call)} = %s FOR UPDATE"


def call_lock(*, call: Call) -> None:
    """Row-locks the call until the transaction ends: an event that routes or plans takes the
    call's lock before a round-robin cursor or a run, in the order the outbox handlers take
    them (call first), so the two cannot deadlock."""
    fetchone(_lock_sql(), [call.pk])


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
        params += [*prepared(Call, updates), call.pk, call.version]
    params += prepared(CallEvent, {**event, "call": call.pk, "received_at": now})
    if transition is not None:
        params += prepared(CallTransition, {**transition, "call": call.pk, "at": now})
    sql = _record_sql(
        tuple(updates) if updates is not None else None,
        tuple(event),
        tuple(transition) if transition is not None else None,
    )
    if fetchone(sql, params) is None:
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
        version = column(Call, "version")
        assignments = ", ".join(
            [*(f"{column(Call, name)} = %s" for name in updates), f"{version} = {version} + 1"]
        )
        parts.append(
            f"updated AS (UPDATE {table(Call)} SET {assignments} "
            f"WHERE {pk_column(Call)} = %s AND {version} = %s RETURNING {pk_column(Call)})"
        )
        source = f"SELECT {values} FROM updated"
    insert_event = (
        f"INSERT INTO {table(CallEvent)} "
        f"({', '.join(column(CallEvent, name) for name in event_names)}) "
        f"{source} RETURNING {pk_column(CallEvent)}"
    )
    if transition is None:
        statement = insert_event
    else:
        parts.append(f"stored AS ({insert_event})")
        names = [*transition, "call", "at"]
        columns = ", ".join(column(CallTransition, name) for name in names)
        statement = (
            f"INSERT INTO {table(CallTransition)} "
            f"({columns}, {column(CallTransition, 'event')}) "
            f"SELECT {', '.join(['%s'] * len(names))}, stored.{pk_column(CallEvent)} FROM stored "
            f"RETURNING {pk_column(CallTransition)}"
        )
    return f"WITH {', '.join(parts)} {statement}" if parts else statement


@cache
def _stored_sql() -> str:
    columns = ", ".join(
        column(CallEvent, name)
        for name in ("device", "body_hash", "response_status", "response_body")
    )
    return f"SELECT {columns} FROM {table(CallEvent)} WHERE {column(CallEvent, 'event_id')} = %s"


def event_stored(*, event_id: str) -> tuple[int, str, int | None, Any] | None:
    """(device id, body hash, response status, response body) of a stored event, if any."""
    row = fetchone(_stored_sql(), [event_id])
    if row is None:
        return None
    body_field = CallEvent._meta.get_field("response_body")
    return row[0], row[1], row[2], body_field.from_db_value(row[3], None, connection)  # type: ignore[arg-type]  # JSONField reads `expression` only for key transforms
