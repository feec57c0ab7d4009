"""Fixtures of the reports' tests: the bridge API's (calls/tests/conftest.py) and logged-in
admin clients of tenant alpha."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from calls.api import serializers
from calls.models import Device
from calls.services import SUPPORT_GROUP, device_register, support_group_ensure
from calls.tests.conftest import SERVER_NOW, Bridge, ended, event, started
from crm.models import Bitrix24User
from tenants.models import Tenant

WARSAW = ZoneInfo("Europe/Warsaw")


@dataclass(frozen=True)
class Spec:
    """A call as a test means it: the phone reports it through the bridge API (place)."""

    call_id: str
    line: str  # which phone: a key of the phones given to place()
    direction: str
    number: str  # E.164, as the call will store it
    local: datetime  # naive: when it started, on the Warsaw clock
    outcome: str  # "" for a call still ringing
    ring: int = 5  # seconds until answered (or until it ended unanswered)
    talk: int = 0

    @property
    def start(self) -> datetime:
        return self.local.replace(tzinfo=WARSAW)

    @property
    def day(self) -> date:
        return self.local.date()

    @property
    def answered_at(self) -> datetime | None:
        return self.start + timedelta(seconds=self.ring) if self.outcome == "answered" else None

    @property
    def ended(self) -> bool:
        return bool(self.outcome)

    @property
    def missed(self) -> bool:
        return self.direction == "incoming" and self.outcome not in ("", "answered", "rejected")


def place(specs: Iterable[Spec], phones: dict[str, Bridge]) -> None:
    """Each call's events as its phone sends them: started, answered, ended."""
    for spec in specs:
        phone = phones[spec.line]
        response = phone.send(
            started(spec.call_id, at=spec.start, direction=spec.direction, phone_number=spec.number)
        )
        assert response.status_code == 201, response.content
        if spec.outcome == "answered":
            answered = spec.start + timedelta(seconds=spec.ring)
            phone.send(event("call.answered", spec.call_id, at=answered))
        if spec.outcome:
            response = phone.send(
                ended(
                    spec.call_id,
                    at=spec.start + timedelta(seconds=spec.ring + spec.talk),
                    outcome=spec.outcome,
                    duration_seconds=spec.talk,
                )
            )
            assert response.status_code in (200, 201), response.content


@pytest.fixture
def directory(alpha: Tenant) -> None:
    """The agents by name, as the directory sync has them."""
    for user_id, name in ((5, "Marta Nowak"), (9, "Ewa Lewandowska")):
        Bitrix24User.objects.update_or_create(
            id=user_id, defaults={"name": name, "active": True, "seen_at": timezone.now()}
        )


@pytest.fixture(autouse=True)
def _server_clock_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in calls' tests: the bridge's timestamp window is measured on a fixed clock."""
    monkeypatch.setattr(serializers, "_server_now", lambda: SERVER_NOW)


@pytest.fixture
def marta(alpha: Tenant, directory: None) -> tuple[Device, Bridge]:
    device, token = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    return device, Bridge(token)


@pytest.fixture
def ewa(alpha: Tenant) -> tuple[Device, Bridge]:
    device, token = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
    )
    return device, Bridge(token)


def login(user: User, host: str = "alpha.localhost") -> Client:
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(alpha: Tenant) -> Client:
    return login(User.objects.create_superuser("boss", password="pw"))


@pytest.fixture
def support_client(alpha: Tenant) -> Client:
    support_group_ensure()
    user = User.objects.create_user("helpdesk", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    return login(user)
