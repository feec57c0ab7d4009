"""Celery entry points of the alerts: beat's minute in public, the check in each tenant."""

from __future__ import annotations

from celery import shared_task

from alerts.services import alerts_check, alerts_schemas
from tenants.fanout import in_tenant_schema, tenants_each


@shared_task(name="alerts.check", ignore_result=True, expires=50, soft_time_limit=90)
def alerts_check_task() -> dict[str, int]:
    """The tenant's alerts, checked once (alerts.services)."""
    if not in_tenant_schema("alerts.check"):
        return {}
    return alerts_check()


@shared_task(name="alerts.check_all", ignore_result=True, expires=50)
def alerts_check_all_task() -> int:
    """Every minute, in public: the check, queued for the tenants with alerts on (a public row
    says which, so a thousand tenants without alerts cost one query)."""
    return tenants_each(alerts_check_task, schemas=alerts_schemas())
