from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from crm.cache import cache_clear, cache_get, once_reset
from crm.models import Bitrix24User
from crm.selectors import crm_find_by_phone
from crm.tasks import directory_sync_task

pytestmark = pytest.mark.worker


def _wait_for(condition: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return None


def test_lookup_past_its_budget_is_finished_in_the_background(
    celery_worker: str, alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None]
) -> None:
    portal = alpha_portal
    committed_db(lambda: _clear_alpha_cache(portal))
    # Slow enough to miss the ringing phone's budget, fast enough for the background task.
    portal.set_fault("slow", delay_ms=600, method="batch")
    with schema_context("alpha"):
        once_reset("lookup-refresh:+48600111222")
        started = time.monotonic()
        lookup = crm_find_by_phone(phone="+48600111222", budget_s=0.2)
        assert time.monotonic() - started < 0.5
        assert lookup.status == "pending"

        cached = _wait_for(lambda: cache_get("+48600111222"))

        assert cached is not None, "the background lookup did not fill the cache"
        again = crm_find_by_phone(phone="+48600111222", budget_s=0.2)
    assert again.entity is not None
    assert (again.status, again.cached, again.entity.name) == ("found", True, "Anna Kowalska")


def test_directory_sync_task_runs_in_the_tenant(
    celery_worker: str, alpha_portal: Any, committed_db: Callable[[Callable[[], None]], None]
) -> None:
    portal = alpha_portal
    user = portal.control.add_user(NAME="New", LAST_NAME="Agent")
    with schema_context("alpha"):
        directory_sync_task.delay()
        synced = _wait_for(lambda: Bitrix24User.objects.filter(id=user["ID"]).first())
    assert synced is not None
    assert synced.name == "New Agent"
    committed_db(lambda: _forget_user(user["ID"]))


def test_directory_sync_is_scheduled_hourly_for_every_tenant() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["crm-directory-sync"]
    # One task in public queues the sync in every active tenant (tenants.fanout).
    assert entry["task"] == "crm.directory_sync_all"
    assert entry["schedule"] == 3600.0
    assert "tenant_schemas" not in entry


def _clear_alpha_cache(portal: Any) -> None:
    portal.clear_faults()
    with schema_context("alpha"):
        cache_clear()


def _forget_user(user_id: int) -> None:
    with schema_context("alpha"):
        Bitrix24User.objects.filter(id=user_id).delete()
