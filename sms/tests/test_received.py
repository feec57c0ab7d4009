"""A text the phone received: in the sender's timeline with the line it came to, the
responsible notified; an unknown sender as the tenant's setting says."""

from __future__ import annotations

from typing import Any

import pytest

from calls.models import Device
from calls.tests.conftest import Bridge
from sms.models import SmsMessage, SmsSettings
from sms.sync import sms_sync
from sms.tests.test_bridge import _event
from tenants.models import Tenant

ANNA = "+48600111222"  # contact 12, responsible 5
STRANGER = "+48600999888"


def _receive(bridge: Bridge, number: str, text: str) -> SmsMessage:
    response = bridge.post("sms/", _event("sms.received", phone_number=number, text=text))
    assert response.status_code == 200
    sms = SmsMessage.objects.get(sms_id=response.json()["sms_id"])
    sms_sync(sms.pk)
    sms.refresh_from_db()
    return sms


def _notes(portal: Any, user_id: int) -> list[str]:
    return [n["MESSAGE"] for n in portal.state.notifications.values() if n["USER_ID"] == user_id]


def test_a_reply_lands_in_the_senders_timeline_and_the_responsible_is_told(
    alpha_portal: Any, bridge: Bridge, device: Device
) -> None:
    sms = _receive(bridge, "600 111 222", "Yes, call me at 5")
    [comment] = alpha_portal.state.comments.values()
    assert (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == ("contact", 12)
    assert "Yes, call me at 5" in comment["COMMENT"]
    assert device.phone_number in comment["COMMENT"]  # the line it came to
    assert any("Yes, call me at 5" in note for note in _notes(alpha_portal, 5))
    assert (sms.crm_entity_type, sms.crm_entity_id, sms.notified_user_id) == ("contact", 12, 5)
    assert sms_sync(sms.pk) == "nothing to do"  # once
    assert len(alpha_portal.state.comments) == 1


@pytest.mark.parametrize("policy", ["ignore", "notify_agent", "create_lead"])
def test_an_unknown_sender_follows_the_tenants_setting(
    alpha: Tenant, alpha_portal: Any, bridge: Bridge, device: Device, policy: str
) -> None:
    SmsSettings.objects.update_or_create(singleton=1, defaults={"unknown_sender": policy})
    leads_before = len(alpha_portal.state.entities["LEAD"])
    sms = _receive(bridge, STRANGER, "Who is this?")
    agent_notes = _notes(alpha_portal, device.bitrix24_user_id)
    leads = [
        lead
        for lead in alpha_portal.state.entities["LEAD"].values()
        if STRANGER in str(lead.get("PHONE"))
    ]
    if policy == "ignore":
        assert sms.outcome == "unknown sender: ignored (the tenant's setting)"
        assert not agent_notes
        assert not leads
    elif policy == "notify_agent":
        assert any("Who is this?" in note for note in agent_notes)
        assert not leads
    else:
        assert len(alpha_portal.state.entities["LEAD"]) == leads_before + 1
        assert len(leads) == 1
        assert (sms.crm_entity_type, sms.crm_entity_id) == ("lead", int(leads[0]["ID"]))
        assert "lead" in sms.outcome


def test_a_text_from_an_alphanumeric_sender_makes_no_lead(
    alpha: Tenant, alpha_portal: Any, bridge: Bridge, device: Device
) -> None:
    SmsSettings.objects.update_or_create(singleton=1, defaults={"unknown_sender": "create_lead"})
    leads_before = len(alpha_portal.state.entities["LEAD"])
    sms = _receive(bridge, "BANK", "Your code is 1234")
    assert sms.phone_number == "BANK"
    assert sms.outcome == "unknown sender: not a phone number, no lead made"
    assert sms.sync_due_at is None
    assert len(alpha_portal.state.entities["LEAD"]) == leads_before
