"""Which phone dials a number clicked in Bitrix24: every rule, in order."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.utils import timezone

from calls.models import Call, CallEvent, Device
from calls.services import device_register, device_revoke
from commands.selection import line_choose
from tenants.models import Tenant

NUMBER = "+48600111222"  # Poland


def _phone(name: str, number: str, user: int = 5, *, seen_ago_min: int | None = None) -> Device:
    device, _ = device_register(name=name, phone_number=number, bitrix24_user_id=user, country="PL")
    if seen_ago_min is not None:
        Device.objects.filter(pk=device.pk).update(
            last_seen_at=timezone.now() - timedelta(minutes=seen_ago_min)
        )
        device.refresh_from_db()
    return device


def _reported(device: Device, call_id: str, *, at: datetime) -> Call:
    """A call the phone reported (with its event)."""
    call = Call.objects.create(device=device, call_id=call_id, phone_number=NUMBER, started_at=at)
    CallEvent.objects.create(
        event_id=uuid.uuid4(),
        device=device,
        call=call,
        type="call.started",
        occurred_at=at,
        body={},
        body_hash="x",
    )
    return call


def test_no_active_phone_is_no_phone_and_says_so(alpha: Tenant) -> None:
    revoked = _phone("Old phone", "+48500100200")
    device_revoke(device=revoked)
    _phone("Someone else's", "+48500100300", user=7)
    choice = line_choose(user_id=5, phone_e164=NUMBER)
    assert choice.device is None
    assert choice.rule == "none"
    assert "user 5 has no active phone" in choice.reason


def test_the_line_chosen_in_bitrix24_wins_when_it_is_the_users(alpha: Tenant) -> None:
    _phone("Polish SIM", "+48500100200", seen_ago_min=1)
    german = _phone("German SIM", "+4915112345678", seen_ago_min=60)
    choice = line_choose(user_id=5, phone_e164=NUMBER, line_number="4915112345678")
    assert (choice.device, choice.rule) == (german, "chosen_line")
    assert "German SIM" in choice.reason


def test_another_users_line_is_not_used_and_the_reason_says_why(alpha: Tenant) -> None:
    own = _phone("Polish SIM", "+48500100200")
    _phone("Ewa's SIM", "+48500100300", user=7)
    choice = line_choose(user_id=5, phone_e164=NUMBER, line_number="+48500100300")
    assert choice.device == own
    assert choice.rule != "chosen_line"
    assert "another user's phone (Ewa's SIM)" in choice.reason


def test_an_unknown_line_falls_through_to_the_other_rules(alpha: Tenant) -> None:
    own = _phone("Polish SIM", "+48500100200")
    choice = line_choose(user_id=5, phone_e164=NUMBER, line_number="7")
    assert choice.device == own
    assert "line 7 is not one of SIMtrix's phones" in choice.reason


def test_the_phone_that_last_spoke_with_the_number_comes_next(alpha: Tenant) -> None:
    _phone("Polish SIM", "+48500100200", seen_ago_min=1)
    german = _phone("German SIM", "+4915112345678", seen_ago_min=90)
    older = _phone("Spare", "+48500100400")
    now = timezone.now()
    _reported(older, "c-old", at=now - timedelta(days=9))
    _reported(german, "c-new", at=now - timedelta(days=1))
    choice = line_choose(user_id=5, phone_e164=NUMBER)
    assert (choice.device, choice.rule) == (german, "last_call")
    assert "German SIM last spoke with this number" in choice.reason


def test_a_call_of_another_users_phone_does_not_count(alpha: Tenant) -> None:
    polish = _phone("Polish SIM", "+48500100200")
    other = _phone("Ewa's SIM", "+4915112345678", user=7)
    _reported(other, "c-1", at=timezone.now())
    choice = line_choose(user_id=5, phone_e164=NUMBER)
    assert (choice.device, choice.rule) == (polish, "same_country")


def test_then_a_phone_in_the_same_country_as_the_number(alpha: Tenant) -> None:
    _phone("German SIM", "+4915112345678", seen_ago_min=1)
    polish = _phone("Polish SIM", "+48500100200", seen_ago_min=500)
    choice = line_choose(user_id=5, phone_e164=NUMBER)
    assert (choice.device, choice.rule) == (polish, "same_country")
    assert "(PL)" in choice.reason


def test_then_the_users_main_phone(alpha: Tenant) -> None:
    _phone("German SIM", "+4915112345678", seen_ago_min=1)
    main = _phone("Czech SIM", "+420601123456", seen_ago_min=300)
    Device.objects.filter(pk=main.pk).update(main=True)
    choice = line_choose(user_id=5, phone_e164="+442071838750")  # a London number
    assert (choice.device, choice.rule) == (main, "main")


def test_last_the_phone_seen_most_recently(alpha: Tenant) -> None:
    _phone("German SIM", "+4915112345678", seen_ago_min=30)
    recent = _phone("Czech SIM", "+420601123456", seen_ago_min=2)
    _phone("Never seen", "+4367612345678")
    choice = line_choose(user_id=5, phone_e164="+442071838750")
    assert (choice.device, choice.rule) == (recent, "most_recent")
    assert "Czech SIM was seen most recently" in choice.reason


def test_a_click_that_never_reached_its_phone_is_no_call_with_the_number(alpha: Tenant) -> None:
    polish = _phone("Polish SIM", "+48500100200")
    czech = _phone("Czech SIM", "+420601123456")
    # Made when a click chose the Czech phone; the phone never reported it.
    Call.objects.create(
        device=czech, call_id="b24-x", phone_number=NUMBER, started_at=timezone.now()
    )
    choice = line_choose(user_id=5, phone_e164=NUMBER)
    assert (choice.device, choice.rule) == (polish, "same_country")
