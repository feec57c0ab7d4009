"""Periodic per-tenant jobs, queued from one task in the public schema.

Beat sends one task in public; that task names the tenants the job is for and queues the job
once in each of their schemas (tenant-schemas-celery carries the schema in the message). What
the job is for is decided here, from public rows, never from anything stored in a tenant's own
schema.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from django_tenants.utils import get_public_schema_name, schema_context

from tenants.connection import tenant_connection
from tenants.models import Tenant, TenantSchedule

logger = logging.getLogger(__name__)


class _Task(Protocol):
    name: str

    def apply_async(self, *args: Any, **kwargs: Any) -> Any: ...


def active_tenant_schemas() -> list[str]:
    return list(
        Tenant.objects.filter(is_active=True)
        .exclude(schema_name=get_public_schema_name())
        .values_list("schema_name", flat=True)
    )


def schedule_flag_set(**flags: bool) -> None:
    """Records in public (TenantSchedule) which periodic jobs the current tenant wants, for
    the fan-out to read (`scheduled_schemas`); nothing in the template schema new tenants are
    cloned from."""
    tenant = Tenant.objects.filter(schema_name=tenant_connection.schema_name).first()
    if tenant is not None:
        TenantSchedule.objects.update_or_create(tenant=tenant, defaults=flags)


def scheduled_schemas(flag: str) -> list[str]:
    """The active tenants whose TenantSchedule has `flag` on."""
    return list(
        TenantSchedule.objects.filter(**{flag: True}, tenant__is_active=True).values_list(
            "tenant__schema_name", flat=True
        )
    )


def tenants_each(task: _Task, *, schemas: Iterable[str] | None = None) -> int:
    """Queues `task` once in each of `schemas` (default: every active tenant); how many."""
    count = 0
    for schema in active_tenant_schemas() if schemas is None else schemas:
        with schema_context(schema):
            task.apply_async()
        count += 1
    return count


def task_queue(
    task: _Task,
    *args: Any,
    what: str,
    countdown: float | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
) -> bool:
    """Queues `task` in the current schema; whether it was. A broker that is down is logged,
    not raised: the caller's row is what makes the work found again (the dispatcher, an hourly
    job, an admin action), and the request or transaction that queued it must not fail for it.
    `priority`: Celery's (Redis: 0 first); None: CELERY_TASK_DEFAULT_PRIORITY."""
    options: dict[str, Any] = {} if priority is None else {"priority": priority}
    try:
        task.apply_async(args, countdown=countdown, eta=eta, **options)
    except Exception as exc:
        logger.warning(
            "%s of %s not queued (taken up later): %s", what, tenant_connection.schema_name, exc
        )
        return False
    return True


def in_tenant_schema(job: str) -> bool:
    """A per-tenant job run in public (by a stray or forged message) does nothing, loudly."""
    if tenant_connection.schema_name == get_public_schema_name():
        logger.error("%s is a per-tenant job and was run in the public schema: ignored", job)
        return False
    return True
