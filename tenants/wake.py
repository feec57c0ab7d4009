"""The dispatcher's index of tenants that need it (OutboxWake), and what a visit runs.

Durable work of any app (an outbox run, a command to a phone that expires, a Bitrix24 event not
processed yet) asks the dispatcher to visit its tenant by a time: `tenant_wake(at=...)`, in the
same transaction as the row that needs it. The dispatcher (scenarios.schedule) visits a due
tenant, dispatches its outbox and runs every registered `visit_hook` in the tenant's schema;
each hook does what is due and answers when it next needs a visit. With nothing due, a thousand
tenants cost one indexed query a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from django.db import connection
from django.db.models import Field, Model

from tenants.connection import tenant_connection
from tenants.models import OutboxWake, Tenant

logger = logging.getLogger(__name__)

VisitHook = Callable[[datetime], datetime | None]
_HOOKS: dict[str, VisitHook] = {}
# A hook that failed asks for a visit again this soon.
_RETRY = timedelta(seconds=10)


def tenant_wake(*, at: datetime) -> None:
    """The dispatcher is to visit the current tenant by `at`.

    Part of the caller's transaction, like the row it is written for: committed together or not
    at all. An insert, so concurrent writers of one tenant never wait on one another.
    """
    with connection.cursor() as cursor:
        cursor.execute(_wake_sql(), [at, tenant_connection.schema_name])
        if cursor.rowcount != 1:
            raise Tenant.DoesNotExist(f"No tenant has the schema {tenant_connection.schema_name}")


@cache
def _wake_sql() -> str:
    # Every run planned, sent or released writes one: SQL written once, not an ORM insert
    # (with its subquery) compiled each time.
    quote = connection.ops.quote_name

    def col(model: type[Model], field: str) -> str:
        # Each name given here is a concrete field's: it has a column.
        return quote(cast("str", cast("Field[Any, Any]", model._meta.get_field(field)).column))

    wakes, tenants = quote(OutboxWake._meta.db_table), quote(Tenant._meta.db_table)
    return (
        f"INSERT INTO {wakes} ({col(OutboxWake, 'tenant')}, {col(OutboxWake, 'at')})"  # noqa: S608 — names from the models, values as parameters
        f" SELECT {col(Tenant, Tenant._meta.pk.name)}, %s FROM {tenants}"
        f" WHERE {col(Tenant, 'schema_name')} = %s"
    )


def visit_hook(name: str) -> Callable[[VisitHook], VisitHook]:
    """Registers `hook(now) -> next visit or None`, run on every visit of a due tenant."""

    def register(hook: VisitHook) -> VisitHook:
        _HOOKS[name] = hook
        return hook

    return register


def visit_hooks_run(now: datetime) -> datetime | None:
    """Runs every hook in the current tenant's schema; the earliest next visit they ask for.

    A hook that fails is logged and asks for a visit again soon; the others still run."""
    soonest: datetime | None = None
    for name, hook in _HOOKS.items():
        try:
            at = hook(now)
        except Exception:
            logger.exception("visit hook %s failed in %s", name, tenant_connection.schema_name)
            at = now + _RETRY
        if at is not None and (soonest is None or at < soonest):
            soonest = at
    return soonest
