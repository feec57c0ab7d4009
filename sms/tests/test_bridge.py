"""The bridge's SMS events against the contract: statuses, idempotency, order, isolation."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from calls.tests.conftest import T0, Bridge, iso
from commands.models import Command
from commands.services import command_ack, commands_expire_due
from sms.models import SmsEvent, SmsMessage
from sms.services import sms_send
from tenants.models import Tenant

NUMBER = "+48600111222"


def _event(type_: str, sms_id: str = "", *, at: Any = T0, **fields: Any) -> dict[str, Any]:
    body = {"event_id": str(uuid.uuid4()), "type": type_, "occurred_at": iso(at), **fields}
    if sms_id:
        body["sms_id"] = sms_id
    return body


def _send(device: Device, text: str = "We will call you back", key: str = "t:1") -> SmsMessage:
    return sms_send(
        device=device,
        phone_number=NUMBER,
        text=text,
        source=SmsMessage.Source.SCENARIO,
        intent_key=key,
    )


def test_a_sent_sms_is_a_send_sms_command_with_the_contract_fields(
    bridge: Bridge, device: Device
) -> None:
    sms = _send(device)
    commands = bridge.get("commands/").json()["commands"]
    assert len(commands) == 1
    command = commands[0]
    assert (command["type"], command["phone_number"]) == ("send_sms", NUMBER)
    assert (command["sms_id"], command["text"]) == (sms.sms_id, "We will call you back")
    assert _send(device).pk == sms.pk  # the same intent: the same message, no second command
    assert Command.objects.count() == 1


def test_the_phones_events_move_the_sms_on_and_replays_count_once(
    bridge: Bridge, device: Device
) -> None:
    sms = _send(device)
    sent = _event("sms.sent", sms.sms_id)
    response = bridge.post("sms/", sent)
    assert response.status_code == 200
    assert response.json() == {
        "sms_id": sms.sms_id,
        "direction": "outgoing",
        "status": "sent",
        "phone_number": NUMBER,
    }
    assert bridge.post("sms/", sent).status_code == 200  # the same event again
    delivered = _event("sms.delivered", sms.sms_id, at=T0 + timedelta(seconds=5))
    assert bridge.post("sms/", delivered).json()["status"] == "delivered"
    sms.refresh_from_db()
    assert (sms.status, sms.sent_at, sms.delivered_at) == (
        "delivered",
        T0,
        T0 + timedelta(seconds=5),
    )
    assert SmsEvent.objects.filter(sms=sms).count() == 2
    # The same event_id with another body: 409, nothing changed.
    conflict = {**sent, "type": "sms.failed", "error": "no signal"}
    assert bridge.post("sms/", conflict).status_code == 409
    sms.refresh_from_db()
    assert sms.status == "delivered"


def test_an_event_older_than_the_status_is_recorded_and_changes_nothing(
    bridge: Bridge, device: Device
) -> None:
    sms = _send(device)
    bridge.post("sms/", _event("sms.delivered", sms.sms_id, at=T0 + timedelta(seconds=5)))
    late = bridge.post("sms/", _event("sms.sent", sms.sms_id))
    assert late.json()["status"] == "delivered"
    failed = bridge.post("sms/", _event("sms.failed", sms.sms_id, error="radio off"))
    assert failed.json()["status"] == "delivered"
    assert list(SmsEvent.objects.filter(sms=sms).order_by("pk").values_list("type", "applied")) == [
        ("sms.delivered", True),
        ("sms.sent", False),
        ("sms.failed", False),
    ]


def test_a_failure_says_why(bridge: Bridge, device: Device) -> None:
    sms = _send(device)
    body = bridge.post("sms/", _event("sms.failed", sms.sms_id, error="no signal")).json()
    assert body["status"] == "failed"
    sms.refresh_from_db()
    assert sms.error == "no signal"
    assert sms.sync_due_at is not None  # the follow-up (Bitrix24's status) is due


def test_another_devices_sms_id_is_404_and_in_a_batch_invalid(
    alpha: Tenant, bridge: Bridge, device: Device
) -> None:
    other, _ = device_register(
        name="Other phone", phone_number="+48500100999", bitrix24_user_id=9, country="PL"
    )
    theirs = _send(other, key="t:other")
    assert bridge.post("sms/", _event("sms.sent", theirs.sms_id)).status_code == 404
    assert bridge.post("sms/", _event("sms.sent", "no-such-sms")).status_code == 404
    mine = _send(device, key="t:mine")
    batch = bridge.post(
        "sms/",
        {"events": [_event("sms.sent", theirs.sms_id), _event("sms.sent", mine.sms_id), "x"]},
    )
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["invalid", "accepted", "invalid"]
    assert "sms_id" in results[0]["errors"]
    theirs.refresh_from_db()
    assert theirs.status == "queued"
    assert not SmsEvent.objects.filter(sms=theirs).exists()


def test_another_tenants_sms_id_is_404(alpha: Tenant, beta: Tenant, bridge: Bridge) -> None:
    with schema_context("beta"):
        beta_device, _ = device_register(
            name="Beta phone", phone_number="+48500100999", bitrix24_user_id=5, country="PL"
        )
        theirs = _send(beta_device, key="t:beta")
    assert bridge.post("sms/", _event("sms.sent", theirs.sms_id)).status_code == 404
    with schema_context("beta"):
        assert SmsMessage.objects.get(pk=theirs.pk).status == "queued"
        SmsMessage.objects.all().delete()
        Command.objects.all().delete()
        Device.objects.filter(pk=beta_device.pk).delete()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "sms.sent"}, "sms_id"),
        ({"type": "sms.received", "phone_number": NUMBER}, "text"),
        ({"type": "sms.received", "text": "hi"}, "phone_number"),
        ({"type": "sms.received", "phone_number": NUMBER, "text": "x" * 1601}, "text"),
        ({"type": "sms.bounced", "sms_id": "s"}, "type"),
        ({"type": "sms.sent", "sms_id": "s", "occurred_at": "2026-11-21T14:32:05"}, "occurred_at"),
    ],
)
def test_bad_input_is_a_400_and_stores_nothing(
    bridge: Bridge, device: Device, body: dict[str, Any], field: str
) -> None:
    event = {"event_id": str(uuid.uuid4()), "occurred_at": iso(T0), **body}
    response = bridge.post("sms/", event)
    assert response.status_code == 400
    assert field in response.json()
    assert not SmsEvent.objects.exists()
    assert not SmsMessage.objects.exists()


def test_a_received_text_is_kept_with_its_line_and_counted_once(
    bridge: Bridge, device: Device
) -> None:
    received = _event("sms.received", phone_number="600 111 222", text="Call me after 5")
    first = bridge.post("sms/", received)
    assert first.status_code == 200
    assert first.json()["direction"] == "incoming"
    assert bridge.post("sms/", received).json()["sms_id"] == first.json()["sms_id"]
    sms = SmsMessage.objects.get()
    assert (sms.phone_number, sms.text, sms.device_id, sms.status) == (
        NUMBER,
        "Call me after 5",
        device.pk,
        "received",
    )
    assert sms.sync_due_at is not None


def test_a_command_the_phone_refuses_or_never_takes_fails_its_sms(device: Device) -> None:
    declined = _send(device, key="t:declined")
    assert declined.command is not None
    command_ack(device=device, command_id=str(declined.command.command_id), status="rejected")
    declined.refresh_from_db()
    assert (declined.status, declined.error) == ("failed", "the agent declined to send it")
    late = _send(device, key="t:late")
    assert late.command is not None
    Command.objects.filter(pk=late.command.pk).update(expires_at=T0)
    commands_expire_due(T0 + timedelta(seconds=1))
    late.refresh_from_db()
    assert late.status == "failed"
    assert "within 24 hours" in late.error
