"""Fixtures of the bridge API tests: a device of tenant alpha and a client that speaks for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from rest_framework.test import APIClient

from calls.api import serializers
from calls.api.auth import device_token_failures_forget
from calls.models import Device
from calls.services import device_register
from tenants.models import Tenant

T0 = datetime(2026, 11, 21, 14, 32, 5, tzinfo=timezone(timedelta(hours=1)))
# The server's clock as the bridge API's timestamp window sees it in these tests: a week after
# T0, so events dated T0 (and a few days later) stay inside the window whatever today is.
SERVER_NOW = T0 + timedelta(days=7)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def event(
    type_: str,
    call_id: str = "c-1",
    *,
    at: datetime = T0,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": type_,
        "call_id": call_id,
        "occurred_at": iso(at),
    }
    body.update(fields)
    return body


def started(call_id: str = "c-1", **fields: Any) -> dict[str, Any]:
    fields.setdefault("direction", "incoming")
    fields.setdefault("phone_number", "+48 600 111 222")
    return event("call.started", call_id, **fields)


def ended(call_id: str = "c-1", **fields: Any) -> dict[str, Any]:
    fields.setdefault("outcome", "answered")
    fields.setdefault("duration_seconds", 95)
    fields.setdefault("at", T0 + timedelta(seconds=120))
    return event("call.ended", call_id, **fields)


class Bridge:
    """An APIClient on a tenant host that speaks for one device."""

    def __init__(self, token: str, host: str = "alpha.localhost") -> None:
        self.token = token
        self.client = APIClient(HTTP_HOST=host)
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(f"/api/bridge/v1/{path}", body, format="json", **kwargs)

    def get(self, path: str) -> Any:
        return self.client.get(f"/api/bridge/v1/{path}")

    def put(self, path: str, data: Any, **kwargs: Any) -> Any:
        return self.client.put(f"/api/bridge/v1/{path}", data, **kwargs)

    def send(self, body: Any) -> Any:
        return self.post("events/", body)


@pytest.fixture(autouse=True)
def _server_clock_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wall-clock time is the one thing mocked: the tests' fixed dates must not age out."""
    monkeypatch.setattr(serializers, "_server_now", lambda: SERVER_NOW)


@pytest.fixture(autouse=True)
def _token_failures_forgotten() -> Iterator[None]:
    """Test clients all come from 127.0.0.1: one test's wrong tokens must not throttle the next."""
    device_token_failures_forget()
    yield
    device_token_failures_forget()


@pytest.fixture
def device_and_token(alpha: Tenant) -> tuple[Device, str]:
    return device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )


@pytest.fixture
def device(device_and_token: tuple[Device, str]) -> Device:
    return device_and_token[0]


@pytest.fixture
def bridge(device_and_token: tuple[Device, str]) -> Bridge:
    return Bridge(device_and_token[1])


@pytest.fixture
def eager_celery() -> Iterator[None]:
    from simtrix.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False
