from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, CallRecording, CallTransition, Device
from calls.services import device_register
from calls.tasks import recordings_expire_task

pytestmark = pytest.mark.worker


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _old_recording(schema: str) -> int:
    """A call whose recording is older than the tenant's retention (90 days by default)."""
    with schema_context(schema):
        device, _ = device_register(
            name=f"{schema} phone", phone_number="+48600111222", bitrix24_user_id=5, country="PL"
        )
        call = Call.objects.create(device=device, call_id=f"{schema}-1", direction="incoming")
        recording = CallRecording.objects.create(
            call=call,
            original_format="mp3",
            sha256="0" * 64,
            uploaded_at=timezone.now() - timedelta(days=365),
        )
        return recording.pk


def _delete_rows(schema: str) -> None:
    with schema_context(schema):
        CallTransition.objects.all().delete()
        CallRecording.objects.all().delete()
        Call.objects.all().delete()
        Device.objects.all().delete()


def test_real_worker_runs_a_task_in_the_schema_that_queued_it(
    celery_worker: str, committed_db: Callable
) -> None:
    recordings = {}
    for schema in ("alpha", "beta"):
        committed_db(lambda schema=schema: _delete_rows(schema))
        recordings[schema] = _old_recording(schema)

    with schema_context("alpha"):
        recordings_expire_task.delay()

    def alpha_expired() -> bool:
        with schema_context("alpha"):
            return CallRecording.objects.filter(
                pk=recordings["alpha"], deleted_at__isnull=False
            ).exists()

    assert _wait_for(alpha_expired), "the worker did not apply alpha's retention"
    with schema_context("alpha"):
        assert CallTransition.objects.filter(changes__has_key="recording_deleted").count() == 1
    # Beta's recording is just as old: only the schema the task was queued in tells them apart.
    with schema_context("beta"):
        assert CallRecording.objects.get(pk=recordings["beta"]).deleted_at is None
        assert not CallTransition.objects.exists()


def test_a_periodic_job_from_public_reaches_every_active_tenant_and_no_other(
    celery_worker: str, committed_db: Callable
) -> None:
    """What beat sends hourly: one task in public, queued by it once in each active tenant."""
    from calls.tasks import recordings_expire_all_task
    from tenants.models import Tenant

    recordings = {}
    for schema in ("alpha", "beta"):
        committed_db(lambda schema=schema: _delete_rows(schema))
        recordings[schema] = _old_recording(schema)
    Tenant.objects.filter(schema_name="beta").update(is_active=False)
    committed_db(lambda: Tenant.objects.filter(schema_name="beta").update(is_active=True))

    recordings_expire_all_task.delay()  # from public, like beat

    def alpha_expired() -> bool:
        with schema_context("alpha"):
            return CallRecording.objects.filter(
                pk=recordings["alpha"], deleted_at__isnull=False
            ).exists()

    assert _wait_for(alpha_expired), "the hourly retention did not reach alpha"
    time.sleep(1)  # beta's, were it queued, would be done by now
    with schema_context("beta"):
        assert CallRecording.objects.get(pk=recordings["beta"]).deleted_at is None
