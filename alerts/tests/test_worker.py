"""The periodic path for real: beat's task in public, fanned out to alpha, run by a Celery worker
process that is killed while its notification is on its way to Bitrix24. The next worker
finishes the job: one incident, one notification (the resend carries the same tag and replaces
it), one history row for it; the recovery is told once too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from alerts.models import AlertSettings, Incident, IncidentEvent
from alerts.tasks import alerts_check_all_task
from alerts.tests.conftest import EWA, heartbeat, notifications_to
from calls.models import Device
from calls.services import device_register
from scenarios.models import OfficeHours
from scenarios.tests.e2e import Phone, Worker, alpha_wipe, wait_for, worker_env
from tenants.connection import tenant_connection
from tenants.models import TenantSchedule

pytestmark = pytest.mark.worker


def _wipe() -> None:
    with schema_context("alpha"):
        Incident.objects.all().delete()
        AlertSettings.objects.all().delete()
    TenantSchedule.objects.filter(tenant__schema_name="alpha").update(alerts=False)
    alpha_wipe()  # devices, calls, the default office hours back


@pytest.fixture
def queue(alpha_portal: Any, committed_db: Callable) -> Iterator[str]:
    from simtrix.celery import app

    committed_db(_wipe)
    _wipe()
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = name
    yield name
    app.conf.task_default_queue = previous


@pytest.fixture
def start_worker(queue: str) -> Iterator[Callable[[], Worker]]:
    started: list[Worker] = []

    def start() -> Worker:
        # A lease of 3 s: a dead worker's check is taken over quickly (150 s in production).
        env = worker_env(queue, SIMTRIX_ALERTS_LEASE_SECONDS="3", SIMTRIX_EMAIL_URL="dummymail://")
        worker = Worker(queue, env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _events(kind: str) -> list[tuple[str, str]]:
    with schema_context("alpha"):
        return list(
            IncidentEvent.objects.filter(kind=kind).order_by("pk").values_list("phase", "channel")
        )


def _checked_at() -> Any:
    with schema_context("alpha"):
        return AlertSettings.objects.values_list("checked_at", flat=True).get()


def _beat() -> None:
    """What beat sends every minute: one task, in public (a bridge request left the test's
    connection in alpha)."""
    tenant_connection.set_schema_to_public()
    alerts_check_all_task.apply_async()


def _beat_until(condition: Callable[[], Any], timeout: float = 30) -> None:
    """Beat's minute, every second here: the public task until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {condition.__name__}"
        _beat()
        time.sleep(1.0)


def test_a_worker_killed_while_it_notifies_loses_and_doubles_nothing(
    alpha_portal: Any, start_worker: Callable[[], Worker]
) -> None:
    with schema_context("alpha"):
        OfficeHours.objects.all().delete()  # open around the clock
        AlertSettings.objects.create(user_ids=[EWA], missed_summary=False)
        device, token = device_register(
            name="Reception", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    phone = Phone(token)
    heartbeat(phone)
    with schema_context("alpha"):
        Device.objects.filter(pk=device.pk).update(
            last_seen_at=timezone.now() - timedelta(minutes=40)
        )
    # Bitrix24 takes 4 s to answer: the worker dies while it waits.
    alpha_portal.set_fault("slow", delay_ms=4000, method="batch")

    first = start_worker()
    _beat()

    def opened() -> bool:
        with schema_context("alpha"):
            return Incident.objects.exists()

    wait_for(opened, timeout=30, interval=0.05)
    time.sleep(1.5)  # the notification is at the portal, which answers after 4 s
    first.kill()

    def told() -> bool:
        return bool(notifications_to(alpha_portal, EWA, "Reception"))

    wait_for(told, timeout=15)  # the portal did carry it out
    assert _events("notice_sent") == []  # the worker died before it could write that down
    alpha_portal.clear_faults()

    start_worker()

    def recorded() -> bool:
        return bool(_events("notice_sent"))

    _beat_until(recorded)
    with schema_context("alpha"):
        incident = Incident.objects.get()
    assert incident.is_open
    assert _events("opened") == [("", "")]
    assert _events("notice_sent") == [("opened", "bitrix24")]
    sent = alpha_portal.state.query_requests(method="im.notify.system.add", in_batch=True)
    assert len(sent) == 2  # the dead worker's and its successor's
    [note] = notifications_to(alpha_portal, EWA, "Reception")  # sent twice, read once
    assert note["MESSAGE"].startswith("SIMtrix alert: The phone Reception")

    # More minutes pass: nothing new.
    before = _checked_at()
    _beat_until(lambda: _checked_at() != before)
    before = _checked_at()
    _beat_until(lambda: _checked_at() != before)
    assert len(notifications_to(alpha_portal, EWA)) == 1
    with schema_context("alpha"):
        assert Incident.objects.count() == 1

    heartbeat(phone)  # the phone speaks again

    def back() -> bool:
        return bool(notifications_to(alpha_portal, EWA, "is back"))

    _beat_until(back)
    with schema_context("alpha"):
        incident.refresh_from_db()
    assert not incident.is_open
    before = _checked_at()
    _beat_until(lambda: _checked_at() != before)
    assert len(notifications_to(alpha_portal, EWA, "is back")) == 1
    assert len(notifications_to(alpha_portal, EWA)) == 2
    assert _events("notice_sent") == [("opened", "bitrix24"), ("cleared", "bitrix24")]
    assert _events("cleared") == [("", "")]
