"""Bitrix24's SMS provider end to end: a robot sends an SMS in the sandbox portal, the portal
posts it to SIMtrix's handler (real HTTP), a real Celery worker gives the responsible's phone a
send_sms command, the phone long-polls it, sends, reports; the statuses reach the portal."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.utils import timezone
from django_tenants.utils import schema_context
from pytest_django import Settings

from calls.models import Device
from calls.services import device_register
from commands.models import Command
from crm.messageservice import PROVIDER_CODE, sms_provider_register
from crm.models import InboundEvent
from sms.models import SmsMessage
from sms.tests.test_bridge import _event
from sms.tests.test_provider import NUMBER, oauth_connect

pytestmark = pytest.mark.worker


def _wipe() -> None:
    with schema_context("alpha"):
        SmsMessage.objects.all().delete()
        Command.objects.all().delete()
        InboundEvent.objects.all().delete()
        Device.objects.all().delete()


def _wait(condition: Callable[[], Any], timeout: float = 40) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


@pytest.fixture(autouse=True)
def _server_clock_pinned() -> None:
    """The phone reports as it happens: the server's real clock."""


@pytest.fixture
def provider(
    committed_db: Callable,
    celery_worker: str,
    web_server: int,
    alpha_portal: Any,
    settings: Settings,
) -> Iterator[dict[str, Any]]:
    committed_db(_wipe)
    settings.SIMTRIX_PUBLIC_SCHEME, settings.SIMTRIX_PUBLIC_PORT = "http", str(web_server)
    with schema_context("alpha"):
        app = oauth_connect(alpha_portal)
        assert sms_provider_register()
    yield app
    _wipe()


def _api(port: int, token: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method,
        f"http://127.0.0.1:{port}/api/bridge/v1/{path}",
        headers={"Host": "alpha.localhost", "Authorization": f"Bearer {token}"},
        timeout=40,
        **kwargs,
    )


def test_a_robots_sms_is_sent_by_the_responsibles_phone_and_bitrix24_hears_how_it_went(
    provider: dict[str, Any], web_server: int, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    sent = alpha_portal.send_sms(
        PROVIDER_CODE,
        NUMBER,
        "Your order is ready for pickup",
        user_id=1,
        module_id="bizproc",
        entity_type="CONTACT",
        entity_id=12,
        client_id=provider["client_id"],
    )
    assert [d["status_code"] for d in sent["deliveries"]] == [200]
    # The phone's long poll: woken when the worker made the command.
    polled = _api(web_server, token, "GET", "commands/?wait=25")
    assert polled.status_code == 200
    [command] = polled.json()["commands"]
    assert (command["type"], command["phone_number"], command["text"]) == (
        "send_sms",
        NUMBER,
        "Your order is ready for pickup",
    )
    ack = _api(web_server, token, "POST", f"commands/{command['command_id']}/ack/",
               json={"status": "done"})  # fmt: skip
    assert ack.status_code == 200
    for type_ in ("sms.sent", "sms.delivered"):
        body = _event(type_, command["sms_id"], at=timezone.now())
        assert _api(web_server, token, "POST", "sms/", json=body).status_code == 200

    def told() -> dict[str, Any] | None:
        message = next(
            m for m in alpha_portal.sms_messages() if m["MESSAGE_ID"] == sent["message_id"]
        )
        return message if message["STATUS"] == "delivered" else None

    message = _wait(told)
    assert message["STATUS_HISTORY"][0] == "queued"
    assert message["STATUS_HISTORY"][-1] == "delivered"
    with schema_context("alpha"):
        sms = SmsMessage.objects.get(sms_id=command["sms_id"])
        assert (sms.b24_message_id, sms.b24_status, sms.b24_user_id) == (
            sent["message_id"],
            "delivered",
            5,
        )
        assert InboundEvent.objects.get(event="MESSAGESERVICE.SEND").status == "done"
