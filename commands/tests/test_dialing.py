"""Click-to-call's edges, one step at a time (the worker's path is test_click_to_call): a click
taken up too late, and a close that finds the phone did place the call after all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from calls.models import CallEvent
from calls.services import device_register
from calls.tests.conftest import T0, Bridge, ended, started
from commands.dialing import dial_close, external_call_start
from commands.models import Command, Dial
from crm.models import InboundEvent
from tenants.models import Tenant

NUMBER = "+48600111222"  # Anna Kowalska


def _click(portal: Any, user_id: int, *, age: timedelta = timedelta(0)) -> InboundEvent:
    """The portal registers the call (its event goes to an address nobody serves); the event
    row SIMtrix would have stored for it, received `age` ago."""
    hook = portal.add_outbound_webhook(
        "http://127.0.0.1:9/bitrix24/events/", ["ONEXTERNALCALLSTART"]
    )
    try:
        b24_call_id = portal.click_to_call(user_id, NUMBER)["call_id"]
    finally:
        portal.delete_outbound_webhook(hook["ID"])
    event = InboundEvent.objects.create(
        event="ONEXTERNALCALLSTART",
        data={
            "CALL_ID": b24_call_id,
            "USER_ID": str(user_id),
            "PHONE_NUMBER_INTERNATIONAL": NUMBER,
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": "12",
        },
    )
    InboundEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - age)
    event.refresh_from_db()
    return event


def _dial_for(event: InboundEvent) -> Dial:
    result = external_call_start(event)
    assert result is not None
    return Dial.objects.get(pk=result["dial"])


def _finished(portal: Any, b24_call_id: str) -> dict[str, Any] | None:
    return next((c for c in portal.calls()["finished"] if c["CALL_ID"] == b24_call_id), None)


def test_a_click_taken_up_too_late_is_not_dialled_and_the_user_is_told(
    alpha: Tenant, alpha_portal: Any
) -> None:
    device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    event = _click(alpha_portal, 5, age=timedelta(minutes=3))
    dial = _dial_for(event)
    assert dial.status == "expired"
    assert "too late to dial" in dial.failure
    assert not Command.objects.exists()
    assert dial_close(dial.pk) == "closed"
    finished = _finished(alpha_portal, event.data["CALL_ID"])
    assert finished is not None
    assert finished["STATISTIC"]["CALL_DURATION"] == 0
    notes = [n for n in alpha_portal.state.notifications.values() if n["USER_ID"] == 5]
    assert any("too late to dial" in n["MESSAGE"] for n in notes)


def test_a_fresh_click_is_dialled_and_its_call_names_the_entity_as_every_call_does(
    alpha: Tenant, alpha_portal: Any
) -> None:
    device, _ = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    event = _click(alpha_portal, 5, age=timedelta(seconds=5))
    dial = _dial_for(event)
    assert (dial.status, dial.device_id) == ("sent", device.pk)
    assert Command.objects.filter(device=device, type="dial").count() == 1
    call = dial.call
    assert call is not None
    assert (call.b24_entity_type, call.b24_entity_id) == ("contact", 12)


def test_a_close_that_finds_the_call_reported_leaves_it_to_the_calls_own_handlers(
    alpha: Tenant, alpha_portal: Any
) -> None:
    _, token = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    event = _click(alpha_portal, 5)
    dial = _dial_for(event)
    # The dial expired (its acknowledgement was lost)...
    Dial.objects.filter(pk=dial.pk).update(status="expired", failure="timed out")
    # ...but the phone did dial, and its events arrived before the close ran.
    call = dial.call
    assert call is not None
    reported = Bridge(token).send(started(call.call_id, direction="outgoing", phone_number=NUMBER))
    assert reported.status_code in (200, 201), reported.content
    assert CallEvent.objects.filter(call=call).exists()
    assert dial_close(dial.pk) == "reported"
    dial.refresh_from_db()
    assert dial.closed_at is not None
    assert _finished(alpha_portal, event.data["CALL_ID"]) is None
    assert not [n for n in alpha_portal.state.notifications.values() if n["USER_ID"] == 5]


def test_a_call_the_phone_reports_after_its_click_was_closed_is_logged_as_its_own(
    alpha: Tenant,
    alpha_portal: Any,
    eager_celery: None,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    _, token = device_register(
        name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
    )
    event = _click(alpha_portal, 5)
    dial = _dial_for(event)
    # The acknowledgement was lost: the dial expired and its Bitrix24 call was finished.
    Dial.objects.filter(pk=dial.pk).update(status="expired", failure="timed out")
    assert dial_close(dial.pk) == "closed"
    clicked_call = _finished(alpha_portal, event.data["CALL_ID"])
    assert clicked_call is not None
    assert clicked_call["STATISTIC"]["CALL_DURATION"] == 0
    call = dial.call
    assert call is not None
    call.refresh_from_db()
    assert (call.b24_call_id, call.b24_finished_at) == ("", None)
    # ...but the phone had dialled, and reports the call now.
    bridge = Bridge(token)
    with django_capture_on_commit_callbacks(execute=True):
        bridge.send(started(call.call_id, direction="outgoing", phone_number=NUMBER))
        bridge.send(
            ended(
                call.call_id, outcome="answered", duration_seconds=42, at=T0 + timedelta(minutes=1)
            )
        )
    call.refresh_from_db()
    assert call.b24_call_id not in ("", event.data["CALL_ID"])
    assert call.b24_finished_at is not None
    own = _finished(alpha_portal, call.b24_call_id)
    assert own is not None
    assert own["STATISTIC"]["CALL_DURATION"] == 42
