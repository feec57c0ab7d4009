"""The commands channel of the bridge API: delivery, acknowledgement, expiry, isolation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from calls.tests.conftest import Bridge
from commands.models import Command, Dial
from commands.services import command_create, commands_expire_due, commands_prune
from tenants.models import Tenant


def _dial(device: Device, number: str = "+48600111222", **payload: Any) -> Command:
    return command_create(
        device=device,
        type=Command.Type.DIAL,
        phone_number=number,
        payload={"call_id": "b24-test", "crm": {"status": "not_found"}, **payload},
    )


def test_a_poll_without_commands_answers_an_empty_list_at_once(bridge: Bridge) -> None:
    response = bridge.get("commands/")
    assert response.status_code == 200
    assert response.json() == {"commands": []}


@pytest.mark.parametrize("wait", ["31", "-1", "abc", "1.5"])
def test_a_wait_outside_0_to_30_is_a_400(bridge: Bridge, wait: str) -> None:
    response = bridge.get(f"commands/?wait={wait}")
    assert response.status_code == 400
    assert "wait" in response.json()


def test_without_a_token_the_channel_is_401(alpha: Tenant) -> None:
    response = Bridge("not-a-token").get("commands/")
    assert response.status_code == 401


def test_a_dial_is_delivered_with_the_contract_fields_until_acknowledged(
    bridge: Bridge, device: Device
) -> None:
    command = _dial(device)
    first = bridge.get("commands/").json()["commands"]
    again = bridge.get("commands/").json()["commands"]
    assert [c["command_id"] for c in first] == [str(command.command_id)]
    assert again == first
    body = first[0]
    assert body["type"] == "dial"
    assert body["phone_number"] == "+48600111222"
    assert body["call_id"] == "b24-test"
    assert body["crm"] == {"status": "not_found"}
    created = datetime.fromisoformat(body["created_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - created == timedelta(seconds=60)
    assert created.utcoffset() is not None
    command.refresh_from_db()
    assert command.delivery_count == 2
    assert command.first_delivered_at is not None

    ack = bridge.post(f"commands/{command.command_id}/ack/", {"status": "done"})
    assert ack.status_code == 200
    assert ack.json()["status"] == "done"
    assert bridge.get("commands/").json() == {"commands": []}


def test_commands_come_oldest_first_and_twenty_at_most(bridge: Bridge, device: Device) -> None:
    made = [_dial(device, f"+4860011{i:04d}") for i in range(23)]
    delivered = bridge.get("commands/").json()["commands"]
    assert [c["command_id"] for c in delivered] == [str(c.command_id) for c in made[:20]]


def test_the_first_acknowledgement_is_final(bridge: Bridge, device: Device) -> None:
    command = _dial(device)
    path = f"commands/{command.command_id}/ack/"
    assert bridge.post(path, {"status": "rejected", "error": "busy"}).status_code == 200
    repeat = bridge.post(path, {"status": "rejected"})
    assert repeat.status_code == 200
    assert repeat.json()["status"] == "rejected"
    other = bridge.post(path, {"status": "done"})
    assert other.status_code == 409
    command.refresh_from_db()
    assert (command.status, command.error) == ("rejected", "busy")


@pytest.mark.parametrize(
    "body",
    [{}, {"status": "maybe"}, {"status": "expired"}, {"status": "done", "error": "x" * 501}],
)
def test_a_bad_acknowledgement_is_a_400_and_changes_nothing(
    bridge: Bridge, device: Device, body: dict[str, Any]
) -> None:
    command = _dial(device)
    response = bridge.post(f"commands/{command.command_id}/ack/", body)
    assert response.status_code == 400
    command.refresh_from_db()
    assert command.status == "pending"


def test_another_device_never_gets_or_acknowledges_the_command(
    bridge: Bridge, device: Device
) -> None:
    command = _dial(device)
    _, other_token = device_register(
        name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=7, country="PL"
    )
    other = Bridge(other_token)
    assert other.get("commands/").json() == {"commands": []}
    ack = other.post(f"commands/{command.command_id}/ack/", {"status": "done"})
    assert ack.status_code == 404
    command.refresh_from_db()
    assert command.status == "pending"


def test_another_tenants_device_never_sees_the_command(
    bridge: Bridge, device: Device, beta: Tenant
) -> None:
    command = _dial(device)
    with schema_context("beta"):
        _, beta_token = device_register(
            name="Beta phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    beta_bridge = Bridge(beta_token, host="beta.localhost")
    assert beta_bridge.get("commands/").json() == {"commands": []}
    ack = beta_bridge.post(f"commands/{command.command_id}/ack/", {"status": "done"})
    assert ack.status_code == 404
    # alpha's token on beta's host is another tenant's token.
    assert Bridge(bridge.token, host="beta.localhost").get("commands/").status_code == 401


@pytest.mark.parametrize("command_id", ["nope", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_command_is_a_404(bridge: Bridge, command_id: str) -> None:
    response = bridge.post(f"commands/{command_id}/ack/", {"status": "done"})
    assert response.status_code == 404


def test_an_expired_command_is_never_delivered_again_and_cannot_be_acknowledged(
    bridge: Bridge, device: Device
) -> None:
    command = _dial(device)
    Command.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bridge.get("commands/").json() == {"commands": []}
    ack = bridge.post(f"commands/{command.command_id}/ack/", {"status": "done"})
    assert ack.status_code == 409
    command.refresh_from_db()
    assert command.status == "expired"


def test_the_dispatcher_expires_what_was_never_acknowledged(device: Device) -> None:
    late = _dial(device)
    fresh = _dial(device)
    past = timezone.now() - timedelta(seconds=1)
    Command.objects.filter(pk=late.pk).update(expires_at=past)
    next_at = commands_expire_due(timezone.now())
    late.refresh_from_db()
    fresh.refresh_from_db()
    assert late.status == "expired"
    assert late.acked_at is None
    assert fresh.status == "pending"
    assert next_at == fresh.expires_at


def test_an_sms_command_expires_after_a_day(device: Device) -> None:
    command = command_create(
        device=device,
        type=Command.Type.SEND_SMS,
        phone_number="+48600111222",
        payload={"sms_id": "s-1", "text": "Hello"},
    )
    assert command.expires_at - command.created_at == timedelta(hours=24)


def test_commands_over_and_older_than_the_retention_are_pruned(device: Device) -> None:
    old = timezone.now() - timedelta(days=91)
    done, pending, recent, dialled = (_dial(device) for _ in range(4))
    Command.objects.filter(pk__in=[done.pk, dialled.pk]).update(status="done")
    Command.objects.filter(pk__in=[done.pk, pending.pk, dialled.pk]).update(created_at=old)
    Command.objects.filter(pk=recent.pk).update(status="done")
    dial = Dial.objects.create(
        b24_call_id="b24-old", b24_user_id=5, command=dialled, status="dialled"
    )
    open_dial = Dial.objects.create(b24_call_id="b24-open", b24_user_id=5, status="expired")
    Dial.objects.filter(pk__in=[dial.pk, open_dial.pk]).update(created_at=old)
    assert commands_prune() == {"dials": 1, "commands": 2}
    # Still pending (the dispatcher expires it), recent, or a failed click not yet closed: kept.
    assert set(Command.objects.values_list("pk", flat=True)) == {pending.pk, recent.pk}
    assert list(Dial.objects.values_list("pk", flat=True)) == [open_dial.pk]
