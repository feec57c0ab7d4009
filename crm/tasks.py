"""Celery entry points (they run inside the tenant schema that queued them)."""

from __future__ import annotations

import math
import random

from celery import Task, shared_task

from crm.directory import directory_sync
from crm.errors import Bitrix24Error, Bitrix24NotConfigured
from crm.events import event_process, events_bind
from crm.messageservice import sms_provider_register
from crm.selectors import crm_find_by_phone
from crm.services import history_prune
from tenants.fanout import in_tenant_schema, tenants_each


def _retries_left(task: Task) -> bool:
    # Celery reads a None max_retries as "retry for ever"; these tasks all set one.
    return task.max_retries is None or task.request.retries < task.max_retries


@shared_task(name="crm.lookup_refresh", bind=True, max_retries=4, soft_time_limit=60, time_limit=90)
def lookup_refresh_task(self: Task, phone_e164: str) -> str:
    """Finishes a lookup that ran out of budget, into the cache."""

    lookup = crm_find_by_phone(phone=phone_e164, budget_s=math.inf, use_cache=False)
    if lookup.status == "unavailable" and _retries_left(self):
        raise self.retry(countdown=2**self.request.retries + random.uniform(0, 1))
    return lookup.status


@shared_task(
    name="crm.directory_sync", bind=True, max_retries=3, soft_time_limit=90, time_limit=120
)
def directory_sync_task(self: Task) -> dict | None:
    """Mirrors users, departments, pipelines, stages, lead statuses and sources (hourly).

    The same hourly run drops request-log rows and finished intents older than 30 days.
    """

    if not in_tenant_schema("crm.directory_sync"):
        return None
    history_prune()
    try:
        return directory_sync().as_dict()
    except Bitrix24NotConfigured:
        return None  # tenants without Bitrix24 have nothing to sync
    except Bitrix24Error as exc:
        if exc.transient and _retries_left(self):
            countdown = exc.retry_after or 30 * 2**self.request.retries
            raise self.retry(exc=exc, countdown=countdown + random.uniform(0, 5)) from exc
        raise


@shared_task(name="crm.directory_sync_all", ignore_result=True, expires=1800)
def directory_sync_all_task() -> int:
    """Hourly, in public: the directory sync, queued once for every active tenant."""
    return tenants_each(directory_sync_task)


@shared_task(name="crm.event_process", acks_late=True, ignore_result=True, soft_time_limit=120)
def event_process_task(event_pk: int) -> str:
    """One Bitrix24 event's work (crm.events)."""
    return event_process(event_pk)


@shared_task(
    name="crm.events_bind", bind=True, max_retries=5, soft_time_limit=60, ignore_result=True
)
def events_bind_task(self: Task) -> list[str] | None:
    """Binds SIMtrix's events in an OAuth-connected portal and registers its SMS provider
    (after its installation)."""
    if not in_tenant_schema("crm.events_bind"):
        return None
    try:
        bound = events_bind()
        if bound:
            sms_provider_register()
        return bound
    except Bitrix24Error as exc:
        if exc.transient and _retries_left(self):
            raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc
        raise
