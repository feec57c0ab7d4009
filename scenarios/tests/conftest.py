"""Fixtures of the scenario engine's tests: calls of tenant alpha in any state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction

from calls.models import Call, Device
from calls.services import device_register
from crm.domain import CrmObject
from scenarios.services import scenario_on_call_event
from tenants.models import Tenant

WARSAW = ZoneInfo("Europe/Warsaw")
# A Wednesday at 10:00 in alpha's timezone: inside the default office hours.
T0 = datetime(2026, 11, 18, 10, 0, tzinfo=WARSAW)

KNOWN: CrmObject = {
    "status": "found",
    "entity": {
        "type": "contact",
        "id": 12,
        "name": "Anna Kowalska",
        "url": "https://portal.example/crm/contact/details/12/",
    },
    "responsible": {"id": 5, "name": "Marta Nowak"},
    "deals": [{"id": 71, "title": "Legal review", "pipeline": "Contracts", "stage": "Talks"}],
}
UNKNOWN: CrmObject = {"status": "not_found", "entity": None, "responsible": None, "deals": []}


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery tasks run in the test's own process and transaction, at once (ETAs ignored)."""
    from simtrix.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def device(alpha: Tenant) -> Device:
    device, _ = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    return device


def call_make(
    device: Device,
    *,
    call_id: str = "c-1",
    direction: str = "incoming",
    phone: str = "+48600111222",
    crm: CrmObject | None = None,
    started_at: datetime = T0,
) -> Call:
    """A call as the bridge API leaves it after call.started (lookup done or not)."""
    crm = crm if crm is not None else KNOWN
    return Call.objects.create(
        device=device,
        call_id=call_id,
        direction=direction,
        phone_number=phone,
        phone_raw=phone,
        status=Call.Status.RINGING,
        started_at=started_at,
        crm=crm,
        crm_status=crm.get("status", ""),
        route={"user": {"id": device.bitrix24_user_id, "name": ""}, "rule": None},
    )


def call_event(call: Call, event_type: str = "call.started", **changes: Any) -> Call:
    """Applies what an event changed and plans, in one transaction, as the bridge API does."""
    with transaction.atomic():
        for name, value in changes.items():
            setattr(call, name, value)
        call.save()
        scenario_on_call_event(call=call, event_type=event_type)
    return call


def call_end(call: Call, outcome: str, *, talk: int = 0, ring: int = 20) -> Call:
    started_at = call.started_at
    assert started_at is not None  # call_make's calls have started
    ended_at = started_at + timedelta(seconds=ring + talk)
    return call_event(
        call,
        "call.ended",
        status=Call.Status.ENDED,
        outcome=outcome,
        ended_at=ended_at,
        answered_at=started_at + timedelta(seconds=ring) if outcome == "answered" else None,
        duration_seconds=talk,
    )
