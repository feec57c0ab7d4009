"""Bitrix24's SMS provider against the sandbox: registered once, a robot's message reaching the
phone of the entity's responsible, its statuses reaching Bitrix24, a message no phone can take
reported failed. Step by step in the test's transaction (the worker's path: test_worker.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from calls.models import Device
from calls.services import device_register
from calls.tests.conftest import Bridge
from commands.models import Command
from commands.services import commands_expire_due
from crm.messageservice import PROVIDER_CODE, SEND_EVENT, sms_provider_register
from crm.models import Bitrix24Connection, InboundEvent
from crm.services import connection_set_oauth_app
from crm.session import apply_token_response, oauth_token_request
from sms.models import SmsMessage
from sms.provider import provider_message
from sms.sync import sms_sync
from sms.tests.test_bridge import _event
from tenants.models import Tenant

NUMBER = "+48600111222"  # Anna Kowalska, contact 12, responsible: user 5 (Marta)
SCOPES = ["crm", "telephony", "user", "im", "task", "messageservice"]


def oauth_connect(portal: Any, *, scopes: list[str] = SCOPES) -> dict[str, Any]:
    """Alpha connected through an installed OAuth application (the install callback's
    token exchange, without the background jobs it queues)."""
    app = portal.add_oauth_app(scopes=scopes)
    connection_set_oauth_app(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        token_url=portal.oauth_token_url,
    )
    conn = Bitrix24Connection.objects.get()
    data = oauth_token_request(conn, refresh_token=app["refresh_token"])
    data.setdefault("client_endpoint", app["client_endpoint"])
    apply_token_response(conn, data)
    conn.auth_mode = Bitrix24Connection.AuthMode.OAUTH
    conn.oauth_application_token = app["application_token"]
    conn.save()
    return app


@pytest.fixture
def provider(alpha: Tenant, alpha_portal: Any, settings: Settings) -> Any:
    settings.SIMTRIX_PUBLIC_SCHEME, settings.SIMTRIX_PUBLIC_PORT = "http", "8000"
    app = oauth_connect(alpha_portal)
    assert sms_provider_register()
    return app


def _message(portal: Any, app: dict[str, Any], **fields: Any) -> InboundEvent:
    """The portal sends a message through the provider; what it posted to the handler reaches
    the view (no server listens here) and is stored as crm.events keeps it."""
    sent = portal.send_sms(
        PROVIDER_CODE,
        fields.pop("to", NUMBER),
        fields.pop("text", "Your order is ready"),
        user_id=fields.pop("user_id", 1),
        module_id=fields.pop("module_id", "bizproc"),
        entity_type=fields.pop("entity_type", "CONTACT"),
        entity_id=fields.pop("entity_id", 12),
        # This test's application: senders outlive the sandbox's reset, as in Bitrix24.
        client_id=app["client_id"],
    )
    (delivery,) = sent["deliveries"]
    response = Client(HTTP_HOST="alpha.localhost").post("/bitrix24/sms/", delivery["fields"])
    assert response.status_code == 200, response.content
    return InboundEvent.objects.filter(event=SEND_EVENT).latest("pk")


def _provide(event: InboundEvent) -> dict[str, Any]:
    """What the worker does with the stored message (crm.events runs the handler)."""
    result = provider_message(event)
    assert result is not None
    return result


def _status(portal: Any, message_id: str) -> dict[str, Any]:
    return next(m for m in portal.sms_messages() if m["MESSAGE_ID"] == message_id)


def test_the_provider_is_registered_once_with_the_tenants_handler(
    provider: Any, alpha_portal: Any
) -> None:
    assert sms_provider_register()  # again: found, not added twice
    senders = [s for s in alpha_portal.sms_senders() if s["CODE"] == PROVIDER_CODE]
    assert len(senders) == 1
    assert senders[0]["HANDLER"] == "http://alpha.localhost:8000/bitrix24/sms/"
    conn = Bitrix24Connection.objects.get()
    assert conn.sms_provider_at is not None
    assert conn.sms_provider_error == ""
    adds = alpha_portal.state.query_requests(method="messageservice.sender.add")
    assert len(adds) == 1


def test_a_webhook_tenant_registers_nothing_and_the_admin_says_why(
    alpha: Tenant, alpha_portal: Any
) -> None:
    assert sms_provider_register() is False
    assert not alpha_portal.state.query_requests(method="messageservice.sender.add")


def test_an_application_without_the_scope_is_recorded_not_retried(
    alpha: Tenant, alpha_portal: Any
) -> None:
    oauth_connect(alpha_portal, scopes=["crm", "telephony", "user", "im", "task"])
    assert sms_provider_register() is False
    assert Bitrix24Connection.objects.get().sms_provider_error != ""


def test_a_robots_sms_goes_to_the_responsibles_phone_and_its_statuses_reach_bitrix24(
    provider: Any, alpha_portal: Any
) -> None:
    marta, token = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    device_register(
        name="Admin's phone", phone_number="+48500100300", bitrix24_user_id=1, country="PL"
    )
    event = _message(alpha_portal, provider)
    result = _provide(event)
    sms = SmsMessage.objects.get(sms_id=result["sms"])
    assert (sms.device_id, sms.b24_user_id, sms.status) == (marta.pk, 5, "queued")
    assert (sms.crm_entity_type, sms.crm_entity_id) == ("contact", 12)
    assert "responsible" in result["why"]
    assert _provide(event)["again"] is True  # delivered twice: one message
    bridge = Bridge(token)
    command = bridge.get("commands/").json()["commands"][0]
    assert (command["type"], command["sms_id"], command["text"]) == (
        "send_sms",
        sms.sms_id,
        "Your order is ready",
    )
    ack = bridge.post(f"commands/{command['command_id']}/ack/", {"status": "done"})
    assert ack.status_code == 200
    assert bridge.post("sms/", _event("sms.sent", sms.sms_id)).status_code == 200
    assert sms_sync(sms.pk) == "Bitrix24 told sent"
    assert _status(alpha_portal, sms.b24_message_id)["STATUS"] == "sent"
    assert bridge.post("sms/", _event("sms.delivered", sms.sms_id)).status_code == 200
    sms_sync(sms.pk)
    message = _status(alpha_portal, sms.b24_message_id)
    assert message["STATUS_HISTORY"][-2:] == ["sent", "delivered"]
    assert sms_sync(sms.pk) == "nothing to do"  # told once


def test_a_message_nobody_can_send_is_failed_in_bitrix24_at_once(
    provider: Any, alpha_portal: Any
) -> None:
    event = _message(alpha_portal, provider)
    result = _provide(event)
    sms = SmsMessage.objects.get(sms_id=result["sms"])
    assert sms.status == "failed"
    assert "no default SMS line" in sms.error
    sms_sync(sms.pk)
    assert _status(alpha_portal, sms.b24_message_id)["STATUS"] == "failed"


def test_without_the_users_phone_the_default_sms_line_sends_it(
    provider: Any, alpha_portal: Any
) -> None:
    line, _ = device_register(
        name="Office line", phone_number="+48500100900", bitrix24_user_id=9, country="PL"
    )
    Device.objects.filter(pk=line.pk).update(sms_default=True)
    result = _provide(_message(alpha_portal, provider))
    sms = SmsMessage.objects.get(sms_id=result["sms"])
    assert sms.device_id == line.pk
    assert "default SMS line" in result["why"]


def test_an_sms_the_phone_never_takes_is_failed_in_bitrix24(
    provider: Any, alpha_portal: Any
) -> None:
    device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    sms = SmsMessage.objects.get(sms_id=_provide(_message(alpha_portal, provider))["sms"])
    assert sms.command is not None
    Command.objects.filter(pk=sms.command.pk).update(expires_at=sms.created_at)
    commands_expire_due(timezone.now())
    sms.refresh_from_db()
    assert sms.status == "failed"
    sms_sync(sms.pk)
    assert _status(alpha_portal, sms.b24_message_id)["STATUS"] == "failed"


def test_a_message_with_another_tenants_token_is_refused(provider: Any) -> None:
    response = Client(HTTP_HOST="alpha.localhost").post(
        "/bitrix24/sms/",
        {"message_id": "x" * 32, "message_to": NUMBER, "auth[application_token]": "forged"},
    )
    assert response.status_code == 401
    assert not InboundEvent.objects.filter(event=SEND_EVENT).exists()


def test_an_entity_that_cannot_be_read_falls_back_to_the_sending_users_phone(
    provider: Any, alpha_portal: Any
) -> None:
    admin_phone, _ = device_register(
        name="Admin's phone", phone_number="+48500100300", bitrix24_user_id=1, country="PL"
    )
    result = _provide(_message(alpha_portal, provider, entity_id=99999))
    sms = SmsMessage.objects.get(sms_id=result["sms"])
    assert sms.device_id == admin_phone.pk
    assert "the user who sent it" in result["why"]
