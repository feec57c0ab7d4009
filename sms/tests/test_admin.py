"""Every SMS in the tenant's admin, next to the calls: filters, read-only, support staff too."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.test import Client

from calls.models import Device
from calls.services import SUPPORT_GROUP, device_register, support_group_ensure
from sms.models import SmsMessage, SmsSettings
from sms.services import sms_send
from tenants.models import Tenant


def _login(user: User) -> Client:
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(user)
    return client


def _messages(device: Device) -> tuple[SmsMessage, SmsMessage]:
    sent = sms_send(
        device=device,
        phone_number="+48600111222",
        text="Sorry we missed your call",
        source=SmsMessage.Source.SCENARIO,
        intent_key="run:1",
    )
    received = SmsMessage.objects.create(
        direction="incoming",
        source="phone",
        device=device,
        phone_number="+48600999888",
        text="Who is this?",
        status="received",
    )
    return sent, received


def test_support_staff_read_every_sms_and_change_none(alpha: Tenant, device: Device) -> None:
    sent, received = _messages(device)
    support_group_ensure()
    user = User.objects.create_user("helpdesk", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    client = _login(user)
    listing = client.get("/admin/sms/smsmessage/").content.decode()
    assert "Sorry we missed your call" in listing
    assert "Who is this?" in listing
    incoming = client.get("/admin/sms/smsmessage/?direction__exact=incoming").content.decode()
    assert "Who is this?" in incoming
    assert "Sorry we missed your call" not in incoming
    assert client.get(f"/admin/sms/smsmessage/{sent.pk}/change/").status_code == 200
    assert client.get("/admin/sms/smsmessage/add/").status_code == 403
    assert client.post(f"/admin/sms/smsmessage/{received.pk}/delete/").status_code == 403
    assert client.get("/admin/commands/dial/").status_code == 200  # the click-to-calls too


def test_the_sms_settings_and_the_default_line_are_the_tenants_to_set(
    alpha: Tenant, device: Device
) -> None:
    client = _login(User.objects.create_superuser("boss", password="pw"))
    response = client.post(
        "/admin/sms/smssettings/add/",
        {"mobile_only": "on", "once_per_hours": "12", "unknown_sender": "create_lead"},
    )
    assert response.status_code == 302
    settings = SmsSettings.objects.get()
    assert (settings.once_per_hours, settings.unknown_sender) == (12, "create_lead")
    page = client.get(f"/admin/calls/device/{device.pk}/change/").content.decode()
    assert 'name="sms_default"' in page
    other, _ = device_register(
        name="Office", phone_number="+48500100900", bitrix24_user_id=9, country="PL"
    )
    Device.objects.filter(pk=other.pk).update(sms_default=True)
    form = client.get(f"/admin/calls/device/{device.pk}/change/")
    assert form.status_code == 200
    data = {
        "name": device.name,
        "phone_number": device.phone_number,
        "bitrix24_user_id": device.bitrix24_user_id,
        "sms_default": "on",
    }
    refused = client.post(f"/admin/calls/device/{device.pk}/change/", data)
    assert refused.status_code == 200
    assert "Another phone is the default SMS line already" in refused.content.decode()
    assert not Device.objects.get(pk=device.pk).sms_default


def test_an_sms_and_a_click_to_call_link_their_crm_entity_to_its_card(
    alpha: Tenant, device: Device, alpha_portal: object
) -> None:
    import re

    from commands.models import Dial

    sent, _ = _messages(device)
    SmsMessage.objects.filter(pk=sent.pk).update(crm_entity_type="contact", crm_entity_id=12)
    dial = Dial.objects.create(
        b24_call_id="externalCall.1",
        b24_user_id=5,
        phone_number="+48600111222",
        crm_entity_type="company",
        crm_entity_id=22,
    )
    client = _login(User.objects.create_superuser("boss", password="pw"))
    page = client.get(f"/admin/sms/smsmessage/{sent.pk}/change/").content.decode()
    card = r'href="https?://[^"]+/crm/contact/details/12/" target="_blank" rel="noopener">'
    assert re.search(card + "contact #12</a>", page)
    page = client.get(f"/admin/commands/dial/{dial.pk}/change/").content.decode()
    card = r'href="https?://[^"]+/crm/company/details/22/" target="_blank" rel="noopener">'
    assert re.search(card + "company #22</a>", page)
