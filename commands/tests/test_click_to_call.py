"""Click-to-call end to end: a user clicks a number in the sandbox portal, the portal posts
ONEXTERNALCALLSTART to SIMtrix (real HTTP), a real Celery worker picks the phone and makes the
dial, the phone long-polls it, dials, reports the call, and the call is finished in Bitrix24
with the CALL_ID the portal registered: never registered a second time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Call, CallEvent, CallNote, CallRecording, CallTransition, Device
from calls.services import device_register
from calls.tests.conftest import T0, Bridge, ended, started
from commands.dialing import commands_due
from commands.models import Command, Dial
from crm.models import Bitrix24Connection, InboundEvent
from scenarios.models import ActionRun, CallPlan
from scenarios.outbox import lane_running, runs_dispatch

pytestmark = pytest.mark.worker

NUMBER = "+48600111222"  # Anna Kowalska, contact 12 of the sandbox's seed


def _wipe() -> None:
    with schema_context("alpha"):
        Dial.objects.all().delete()
        Command.objects.all().delete()
        InboundEvent.objects.all().delete()
        for model in (CallTransition, CallEvent, CallNote, CallRecording, ActionRun, CallPlan):
            model.objects.all().delete()
        Call.objects.all().delete()
        Device.objects.all().delete()


def _wait(condition: Callable[[], Any], timeout: float = 40) -> Any:
    """Waits for the worker; does the scheduler's job meanwhile (dispatch due runs, expire)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with schema_context("alpha"):
            value = condition()
            if value:
                return value
            ActionRun.objects.filter(status="scheduled", due_at__gt=timezone.now()).update(
                due_at=timezone.now()
            )
            runs_dispatch()
            commands_due(timezone.now())
        time.sleep(0.3)
    with schema_context("alpha"):
        runs = list(
            ActionRun.objects.order_by("pk").values_list(
                "action_type", "status", "due_at", "dispatched_at", "attempts", "last_error"
            )
        )
        lane = lane_running()
    raise AssertionError(f"timed out waiting; alpha's lane running: {lane}; its runs: {runs}")


@pytest.fixture
def clicked(
    committed_db: Callable, celery_worker: str, web_server: int, alpha_portal: Any
) -> Iterator[Callable[..., dict[str, Any]]]:
    """The portal's outbound webhook points at alpha's events URL; returns 'a user clicks'."""
    committed_db(_wipe)
    hook = alpha_portal.add_outbound_webhook(
        f"http://alpha.localhost:{web_server}/bitrix24/events/", ["ONEXTERNALCALLSTART"]
    )
    with schema_context("alpha"):
        Bitrix24Connection.objects.filter(singleton=1).update(
            events_token=hook["APPLICATION_TOKEN"]
        )

    def click(user_id: int, number: str = NUMBER, **extra: Any) -> dict[str, Any]:
        result = alpha_portal.click_to_call(user_id, number, **extra)
        assert [d["status_code"] for d in result["deliveries"]] == [200]
        return result

    yield click
    alpha_portal.delete_outbound_webhook(hook["ID"])


def _poll(port: int, token: str, wait: int = 20) -> list[dict[str, Any]]:
    response = requests.get(
        f"http://127.0.0.1:{port}/api/bridge/v1/commands/?wait={wait}",
        headers={"Host": "alpha.localhost", "Authorization": f"Bearer {token}"},
        timeout=wait + 10,
    )
    assert response.status_code == 200
    return response.json()["commands"]


def _finished(portal: Any, call_id: str) -> dict[str, Any] | None:
    return next((c for c in portal.calls()["finished"] if c["CALL_ID"] == call_id), None)


def _registers(portal: Any) -> list[dict[str, Any]]:
    return portal.state.query_requests(method="telephony.externalcall.register")


def test_the_clicked_number_is_dialled_by_the_users_phone_and_finished_with_its_call_id(
    clicked: Callable[..., dict[str, Any]], web_server: int, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
        _, other_token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
    b24_call_id = clicked(5)["call_id"]
    commands = _poll(web_server, token)
    assert len(commands) == 1
    dial = commands[0]
    assert (dial["type"], dial["phone_number"]) == ("dial", NUMBER)
    assert dial["crm"]["entity"]["name"] == "Anna Kowalska"
    assert _poll(web_server, other_token, wait=0) == []  # another device never gets it

    bridge = Bridge(token)
    ack = bridge.post(f"commands/{dial['command_id']}/ack/", {"status": "done"})
    assert ack.status_code == 200
    call_id = dial["call_id"]
    assert bridge.send(started(call_id, direction="outgoing", phone_number=NUMBER)).status_code in (
        200,
        201,
    )
    finish = ended(call_id, outcome="answered", duration_seconds=42, at=T0 + timedelta(minutes=1))
    assert bridge.send(finish).status_code == 200

    finished = _wait(lambda: _finished(alpha_portal, b24_call_id))
    assert finished["STATISTIC"]["CALL_DURATION"] == 42
    assert _registers(alpha_portal) == []  # the portal's own registration, never a second
    with schema_context("alpha"):
        call = Call.objects.get(call_id=call_id)
        assert (call.b24_call_id, call.direction, call.outcome) == (
            b24_call_id,
            "outgoing",
            "answered",
        )
        assert call.b24_finished_at is not None
        # The entity Bitrix24 bound the call to ("CONTACT"), as every call names it.
        assert call.b24_entity_type == "contact"
        assert call.b24_entity_id is not None
        first = call.transitions.order_by("at", "pk").first()
        assert first is not None
        assert "Click-to-call from Bitrix24 user 5" in first.description
        assert "Marta's phone" in first.description
        assert Dial.objects.get(b24_call_id=b24_call_id).status == "dialled"
        assert ActionRun.objects.filter(call=call, action_type="log_call", status="done").exists()


def test_a_user_without_a_phone_gets_the_call_finished_and_told_why(
    clicked: Callable[..., dict[str, Any]], alpha_portal: Any
) -> None:
    b24_call_id = clicked(3)["call_id"]
    finished = _wait(lambda: _finished(alpha_portal, b24_call_id))
    assert finished["STATISTIC"]["CALL_DURATION"] == 0
    assert str(finished["STATISTIC"]["CALL_FAILED_CODE"]) != "200"
    notes = [n for n in alpha_portal.state.notifications.values() if n["USER_ID"] == 3]
    assert any("has no active phone" in n["MESSAGE"] for n in notes)
    with schema_context("alpha"):
        dial = Dial.objects.get(b24_call_id=b24_call_id)
        assert dial.status == "no_phone"
        assert dial.closed_at is not None
        assert not Command.objects.exists()


def test_a_dial_the_agent_rejects_is_finished_as_not_connected(
    clicked: Callable[..., dict[str, Any]], web_server: int, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    b24_call_id = clicked(5)["call_id"]
    dial = _poll(web_server, token)[0]
    ack = Bridge(token).post(f"commands/{dial['command_id']}/ack/", {"status": "rejected"})
    assert ack.status_code == 200
    finished = _wait(lambda: _finished(alpha_portal, b24_call_id))
    assert finished["STATISTIC"]["CALL_DURATION"] == 0
    notes = [n for n in alpha_portal.state.notifications.values() if n["USER_ID"] == 5]
    assert any("declined" in n["MESSAGE"] for n in notes)
    with schema_context("alpha"):
        call = Call.objects.get(call_id=dial["call_id"])
        assert (call.status, call.outcome) == ("ended", "cancelled")
        assert call.transitions.filter(description__startswith="Click-to-call not connected")
    assert _poll(web_server, token, wait=0) == []


def test_a_dial_the_phone_never_picks_up_expires_and_is_finished(
    clicked: Callable[..., dict[str, Any]], web_server: int, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    b24_call_id = clicked(5)["call_id"]
    _wait(Command.objects.exists)
    with schema_context("alpha"):
        Command.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    finished = _wait(lambda: _finished(alpha_portal, b24_call_id))
    assert finished["STATISTIC"]["CALL_DURATION"] == 0
    with schema_context("alpha"):
        assert Command.objects.get().status == "expired"
        assert Dial.objects.get(b24_call_id=b24_call_id).status == "expired"
    notes = [n for n in alpha_portal.state.notifications.values() if n["USER_ID"] == 5]
    assert any("did not pick up the call in time" in n["MESSAGE"] for n in notes)


def test_a_dial_acknowledged_but_never_reported_is_closed_in_the_end(
    clicked: Callable[..., dict[str, Any]], web_server: int, alpha_portal: Any
) -> None:
    with schema_context("alpha"):
        _, token = device_register(
            name="Marta's phone", phone_number="+48500100200", bitrix24_user_id=5, country="PL"
        )
    b24_call_id = clicked(5)["call_id"]
    dial = _poll(web_server, token)[0]
    ack = Bridge(token).post(f"commands/{dial['command_id']}/ack/", {"status": "done"})
    assert ack.status_code == 200
    with schema_context("alpha"):
        record = Dial.objects.get(b24_call_id=b24_call_id)
        assert record.status == "dialled"
        assert record.next_attempt_at is not None
        Dial.objects.filter(pk=record.pk).update(next_attempt_at=timezone.now())
    finished = _wait(lambda: _finished(alpha_portal, b24_call_id))
    assert finished["STATISTIC"]["CALL_DURATION"] == 0
    with schema_context("alpha"):
        record.refresh_from_db()
        assert (record.status, record.failure) == (
            "failed",
            "the phone dialled but never reported the call",
        )
