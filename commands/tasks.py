"""Celery entry points of the commands app (they run in the schema that queued them)."""

from __future__ import annotations

import random

from celery import Task, shared_task

from commands.dialing import dial_close
from commands.lines import lines_sync_devices
from commands.services import commands_prune
from crm.errors import Bitrix24Error, Bitrix24NotConfigured
from tenants.fanout import in_tenant_schema, tenants_each


@shared_task(name="commands.dial_close", acks_late=True, ignore_result=True, soft_time_limit=60)
def dial_close_task(dial_pk: int) -> str:
    """A click-to-call that did not connect: its Bitrix24 call finished, the user told why."""
    return dial_close(dial_pk)


@shared_task(
    name="commands.lines_sync", bind=True, max_retries=4, soft_time_limit=60, ignore_result=True
)
def lines_sync_task(self: Task) -> dict | None:
    """The hourly upkeep: the tenant's external lines checked, old commands pruned."""
    if not in_tenant_schema("commands.lines_sync"):
        return None
    commands_prune()
    try:
        return vars(lines_sync_devices())
    except Bitrix24NotConfigured:
        return None
    except Bitrix24Error as exc:
        retries = self.request.retries
        if exc.transient and (self.max_retries is None or retries < self.max_retries):
            raise self.retry(exc=exc, countdown=30 * 2**retries + random.uniform(0, 5)) from exc
        raise


@shared_task(name="commands.lines_sync_all", ignore_result=True, expires=1800)
def lines_sync_all_task() -> int:
    """Hourly, in public: each tenant's lines checked (no request when nothing changed)."""
    return tenants_each(lines_sync_task)
