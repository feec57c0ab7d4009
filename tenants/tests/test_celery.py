from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from calls.tasks import device_mark_seen_task

pytestmark = pytest.mark.worker


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_real_worker_runs_a_task_in_the_schema_that_queued_it(
    celery_worker: str, committed_db: Callable
) -> None:
    devices = {}
    for schema in ("alpha", "beta"):
        with schema_context(schema):
            device, _ = device_register(
                name=f"{schema} phone", phone_number="+48600111222", bitrix24_user_id=5,
                country="PL",
            )  # fmt: skip
            devices[schema] = device.pk
            committed_db(lambda schema=schema: _delete_devices(schema))
    # The same primary key in both schemas: only the schema tells the worker which row is meant.
    with schema_context("beta"):
        Device.objects.filter(pk=devices["beta"]).update(id=devices["alpha"])
        devices["beta"] = devices["alpha"]

    sent_at = timezone.now()
    with schema_context("alpha"):
        device_mark_seen_task.delay(devices["alpha"], "9.9.9")

    def alpha_seen() -> bool:
        with schema_context("alpha"):
            return Device.objects.filter(pk=devices["alpha"], app_version="9.9.9").exists()

    assert _wait_for(alpha_seen), "the worker did not update alpha's device"
    with schema_context("alpha"):
        assert Device.objects.get(pk=devices["alpha"]).last_seen_at >= sent_at
    with schema_context("beta"):
        beta_device = Device.objects.get(pk=devices["beta"])
        assert beta_device.app_version == ""
        assert beta_device.last_seen_at is None


def _delete_devices(schema: str) -> None:
    with schema_context(schema):
        Device.objects.all().delete()
