"""The hot path's statements (calls/sql.py): prepared on the server, and right for every tenant."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from django.db import connection
from django_tenants.utils import schema_context

from calls.models import Call, Device
from calls.services import device_register
from calls.sql import _read_sql
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
