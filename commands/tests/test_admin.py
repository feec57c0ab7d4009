"""Support staff read click-to-calls and commands in the tenant's admin."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.models import Call, Device
from commands.models import Command, Dial
from commands.services import command_create
from crm.models import Bitrix24User
from tenants.models import Tenant


def _admin() -> Client:
    User.objects.create_superuser("alpha-admin", password="pw-alpha-1")
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(User.objects.get(username="alpha-admin"))
    return client


def test_a_click_to_call_shows_who_clicked_the_phone_chosen_and_why(
    alpha: Tenant, device: Device
) -> None:
    Bitrix24User.objects.create(id=5, name="Marta Nowak", active=True, seen_at=timezone.now())
    call = Call.objects.create(device=device, call_id="b24-1", direction="outgoing")
    command = command_create(
        device=device, type=Command.Type.DIAL, phone_number="+48600111222", payload={}
    )
    dial = Dial.objects.create(
        b24_call_id="externalCall.abc.1",
        b24_user_id=5,
        phone_number="+48600111222",
        device=device,
        call=call,
        command=command,
        line_reason="Marta's phone has a number in the same country (PL)",
    )
    client = _admin()
    listing = client.get("/admin/commands/dial/").content.decode()
    assert "Marta Nowak (#5)" in listing
    assert "same country (PL)" in listing
    page = client.get(f"/admin/commands/dial/{dial.pk}/change/").content.decode()
    assert f"/admin/calls/call/{call.pk}/change/" in page
    assert client.get("/admin/commands/command/").status_code == 200
    assert client.get(f"/admin/commands/command/{command.pk}/change/").status_code == 200
    assert client.get("/admin/commands/dial/add/").status_code == 403


def test_the_main_phone_is_a_device_setting(alpha: Tenant, device: Device) -> None:
    page = _admin().get(f"/admin/calls/device/{device.pk}/change/").content.decode()
    assert 'name="main"' in page
