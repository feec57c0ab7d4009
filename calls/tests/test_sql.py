"""The hot path's statements (calls/sql.py): prepared on the server, and right for every tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.sql import _read_sql, call_get
from calls.tests.conftest import T0, Bridge, event, started
from common.sql import _cursor
from tenants.models import Tenant


def _prepared_reads() -> list[str]:
    """The read statement as the server holds it, once per time it was prepared."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    table = connection.ops.quote_name(Call._meta.db_table)
    return [s for s in statements if f"FROM {table} c" in s and "json_agg" in s]


def test_an_event_reads_its_call_with_a_statement_prepared_once(
    bridge: Bridge, device: Device
) -> None:
    assert bridge.send(started("c-prep")).status_code == 201
    for offset in (5, 65):
        answer = bridge.send(event("call.answered", "c-prep", at=T0 + timedelta(seconds=offset)))
        assert answer.status_code == 200

    # Prepared on the server (not parsed and planned again for every event), and only once.
    assert _prepared_reads() == [_read_sql().replace("%s", "$1", 1).replace("%s", "$2", 1)]


def test_a_prepared_statement_reads_the_schema_of_the_tenant_it_runs_for(
    bridge: Bridge, device: Device, beta: Tenant
) -> None:
    with schema_context("beta"):
        _, token = device_register(
            name="Beta phone", phone_number="+48500999888", bitrix24_user_id=7, country="PL"
        )
    beta_bridge = Bridge(token, host="beta.localhost")

    # The same call id on both tenants, one event at a time on each in turn, on one connection.
    assert bridge.send(started("c-same", phone_number="+48 600 111 222")).status_code == 201
    assert beta_bridge.send(started("c-same", phone_number="+48 600 333 444")).status_code == 201
    answered = event("call.answered", "c-same", at=T0 + timedelta(seconds=5))
    assert beta_bridge.send(answered).status_code == 200
    alpha_ended = bridge.send(
        event(
            "call.ended",
            "c-same",
            at=T0 + timedelta(seconds=9),
            outcome="missed",
            duration_seconds=0,
        )
    )

    assert alpha_ended.status_code == 200, alpha_ended.json()
    assert alpha_ended.json()["phone_number"] == "+48600111222"
    assert alpha_ended.json()["outcome"] == "missed"
    with schema_context("beta"):
        beta_call = Call.objects.get(call_id="c-same")
        assert beta_call.phone_number == "+48600333444"
        assert (beta_call.status, beta_call.outcome) == (Call.Status.IN_PROGRESS, "")
    alpha_call = Call.objects.get(call_id="c-same")
    assert alpha_call.phone_number == "+48600111222"
    assert (alpha_call.status, alpha_call.answered_at) == (Call.Status.ENDED, None)
    assert len(_prepared_reads()) == 1


def test_the_kept_cursor_follows_the_connection_it_was_made_for(alpha: Tenant) -> None:
    with connection.cursor():
        pass
    kept = _cursor(connection.connection)
    assert _cursor(connection.connection) is kept

    # A new connection (CONN_MAX_AGE, a failed health check) gets a cursor of its own.
    replacement = psycopg.connect(**connection.get_connection_params())
    try:
        cursor = _cursor(replacement)
        assert cursor is not kept
        assert cursor.connection is replacement
        assert cursor.execute("SELECT 1", prepare=True).fetchone() == (1,)
        replacement.close()
        # Back on Django's connection: its own cursor again, not the closed one.
        assert _cursor(connection.connection).connection is connection.connection
    finally:
        replacement.close()


def test_a_runs_call_is_read_with_its_device_as_the_orm_reads_it(
    bridge: Bridge, device: Device
) -> None:
    assert bridge.send(started("c-get", phone_number="+48 600 111 222")).status_code == 201
    pk = Call.objects.get(call_id="c-get").pk
    orm = Call.objects.select_related("device").get(pk=pk)
    read = call_get(pk=pk)
    fields = [f.attname for f in Call._meta.concrete_fields]
    assert [getattr(read, name) for name in fields] == [getattr(orm, name) for name in fields]
    assert isinstance(read.crm, dict)  # JSON as the ORM reads it
    device_fields = [f.attname for f in Device._meta.concrete_fields]
    with CaptureQueriesContext(connection) as queries:
        assert [getattr(read.device, f) for f in device_fields] == [
            getattr(orm.device, f) for f in device_fields
        ]
    assert len(queries) == 0  # read with the call
    with pytest.raises(Call.DoesNotExist):
        call_get(pk=pk + 1000)


def test_a_locked_read_locks_the_call_and_not_its_device(
    committed_call: Callable[..., Call],
) -> None:
    call = committed_call("c-lock", "+48500100299")
    tables = {m: connection.ops.quote_name(m._meta.db_table) for m in (Call, Device)}
    with schema_context("alpha"), transaction.atomic():
        assert call_get(pk=call.pk, lock=True).device.pk == call.device_id
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("SET search_path TO alpha, public")
            other.execute("SET lock_timeout = '200ms'")
            # The device's other calls go on (it is not locked); the call waits.
            row = other.execute(
                f"SELECT id FROM {tables[Device]} WHERE id = %s FOR UPDATE",  # noqa: S608 — a model's table
                [call.device_id],
            ).fetchone()
            assert row == (call.device_id,)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    f"SELECT 1 FROM {tables[Call]} WHERE id = %s FOR UPDATE",  # noqa: S608 — a model's table
                    [call.pk],
                )
