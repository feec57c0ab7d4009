"""Fixtures of the alerts' tests: alpha connected to the sandbox portal, its alert settings, a
phone speaking through the bridge API, the outbox's due runs executed in the test's process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from alerts.models import AlertSettings, IncidentEvent
from alerts.services import alert_settings_ensure
from calls.api.auth import device_token_failures_forget
from calls.models import Device
from calls.services import device_register
from scenarios import outbox
from scenarios.models import ActionRun, OfficeHours
from scenarios.tests.e2e import Phone
from tenants.models import Tenant

# The sandbox's seed users: Ewa is alerted, Marta carries the phone.
EWA, MARTA = 9, 5


@pytest.fixture(autouse=True)
def _token_failures_forgotten() -> Iterator[None]:
    device_token_failures_forget()
    yield
    device_token_failures_forget()


@pytest.fixture
def always_open(alpha: Tenant) -> None:
    """No weekly hours: the office is open around the clock (worktime's reading of none)."""
    OfficeHours.objects.all().delete()


@pytest.fixture
def alerts_on(alpha: Tenant) -> AlertSettings:
    row = alert_settings_ensure()
    row.user_ids = [EWA]
    row.email = "boss@example.com"
    row.save()
    return row


@pytest.fixture
def reception(alpha: Tenant) -> tuple[Device, Phone]:
    device, token = device_register(
        name="Reception", phone_number="+48500100200", bitrix24_user_id=MARTA, country="PL"
    )
    return device, Phone(token)


def heartbeat(phone: Phone) -> None:
    response = phone.client.post(
        "/api/bridge/v1/heartbeat/", {"app_version": "1.4.0"}, format="json"
    )
    assert response.status_code == 200, response.content


def run_due(within: timedelta = timedelta(minutes=1)) -> dict[str, list[str]]:
    """What the dispatcher and a worker would do over the next minute: the runs due by then
    executed (time passes: they are made due now; a callback task half an hour away is not),
    until none is left. Returns each action type's statuses."""
    while True:
        soon = ActionRun.objects.filter(
            status=ActionRun.Status.SCHEDULED, due_at__lte=timezone.now() + within
        )
        soon.update(due_at=timezone.now())
        due = list(soon.values_list("pk", flat=True))
        if not due:
            break
        for pk in due:
            outbox.run_execute(pk)
    found: dict[str, list[str]] = {}
    for action_type, status in ActionRun.objects.order_by("pk").values_list(
        "action_type", "status"
    ):
        found.setdefault(action_type, []).append(status)
    return found


def notifications_to(portal: Any, user_id: int, containing: str = "") -> list[dict[str, Any]]:
    return [
        note
        for note in portal.control.notifications()
        if int(note["USER_ID"]) == user_id and containing in note["MESSAGE"]
    ]


def history(incident_pk: int) -> list[tuple[str, str, str]]:
    return list(
        IncidentEvent.objects.filter(incident_id=incident_pk)
        .order_by("at", "pk")
        .values_list("kind", "phase", "channel")
    )


def local(moment: datetime) -> str:
    """A moment as the notices write it: the tenant's wall clock, to the minute."""
    zone = ZoneInfo(Tenant.objects.get(schema_name="alpha").timezone)
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"
