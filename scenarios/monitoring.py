"""Every tenant's outbox as it is right now, for the operators' /metrics and `outbox_status`.

Visiting each schema in turn (three queries a tenant), a scrape every 15 s over a thousand
tenants would be 3,000 queries. Here each batch of schemas is one statement, a
`UNION ALL` of one indexed aggregate per schema (the `(status, due_at)` index: only scheduled and
failed rows are read), so a scrape costs a round trip per 200 tenants. A schema without the
outbox table (a tenant whose migrations have not run yet, or failed) would fail the whole
statement and drop every tenant's gauges: the schemas that have it are found first (one query
of the catalog) and only those are counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from django.db import connection
from django.utils import timezone

from common.sql import column, table
from scenarios.models import ActionRun
from scenarios.outbox import LATE_AFTER
from tenants.fanout import active_tenant_schemas

Status = ActionRun.Status

SCHEMAS_PER_STATEMENT = 200


class OutboxCounts(TypedDict):
    schema: str
    due: int  # scheduled, due, not started
    late: int  # of those, due for longer than LATE_AFTER
    failed: int  # gave up (shown in the admin with a Retry action)
    oldest_due_seconds: float | None


def outbox_counts_all(*, now: datetime | None = None) -> list[OutboxCounts]:
    """Due, late and failed runs of every active tenant (a statement per 200 tenants)."""
    now = now or timezone.now()
    schemas = _with_outbox_table(sorted(active_tenant_schemas()))
    counts: list[OutboxCounts] = []
    for start in range(0, len(schemas), SCHEMAS_PER_STATEMENT):
        counts += _counts(schemas[start : start + SCHEMAS_PER_STATEMENT], now=now)
    return counts


def _with_outbox_table(schemas: list[str]) -> list[str]:
    if not schemas:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = %s AND table_schema = ANY(%s)",
            [ActionRun._meta.db_table, schemas],
        )
        present = {row[0] for row in cursor.fetchall()}
    return [schema for schema in schemas if schema in present]


def _counts(schemas: list[str], *, now: datetime) -> list[OutboxCounts]:
    status, due_at = column(ActionRun, "status"), column(ActionRun, "due_at")
    due = f"{status} = %(scheduled)s AND {due_at} <= %(now)s"
    # Identifiers are quoted (a schema name django-tenants validated, the model's columns); every
    # value is a parameter.
    arms = [
        f"SELECT %(schema_{i})s, "  # noqa: S608
        f"count(*) FILTER (WHERE {due}), "
        f"count(*) FILTER (WHERE {status} = %(scheduled)s AND {due_at} < %(late_before)s), "
        f"count(*) FILTER (WHERE {status} = %(failed)s), "
        f"min({due_at}) FILTER (WHERE {due}) "
        f"FROM {connection.ops.quote_name(schema)}.{table(ActionRun)} "
        f"WHERE {status} IN (%(scheduled)s, %(failed)s)"
        for i, schema in enumerate(schemas)
    ]
    params: dict[str, Any] = {
        "now": now,
        "late_before": now - LATE_AFTER,
        "scheduled": Status.SCHEDULED.value,
        "failed": Status.FAILED.value,
        **{f"schema_{i}": schema for i, schema in enumerate(schemas)},
    }
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(arms), params)
        rows = cursor.fetchall()
    return [
        {
            "schema": schema,
            "due": due_count,
            "late": late,
            "failed": failed,
            "oldest_due_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        }
        for schema, due_count, late, failed, oldest in rows
    ]
