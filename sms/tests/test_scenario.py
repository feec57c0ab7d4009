"""The scenario action `send_sms` end to end (bridge API -> outbox -> real worker -> the phone's
commands -> sandbox), and each of its guards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register
from scenarios.models import ActionRun, Scenario, ScenarioAction
from scenarios.tests.e2e import Phone, alpha_wipe, dispatching, wait_for
from sms.models import SmsMessage, SmsSettings
from sms.services import sms_guard_problem, sms_send
from sms.tests.test_bridge import _event
from tenants.models import Tenant

ANNA = "+48600111222"  # contact 12
TEXT = "Sorry we missed you, {caller}: we call back soon. {agent}"


def _add_send_sms(trigger: str = "incoming_missed") -> None:
    ScenarioAction.objects.create(
        scenario=Scenario.objects.get(trigger=trigger),
        position=90,
        action_type="send_sms",
        text_template=TEXT,
    )


@pytest.fixture(autouse=True)
def _server_clock_pinned() -> None:
    """The phone here reports as it happens: the server's real clock (not the bridge tests')."""


@pytest.fixture
def phone(
    celery_worker: str, alpha_portal: Any, committed_db: Callable
) -> Iterator[tuple[Phone, Device]]:
    committed_db(alpha_wipe)
    with schema_context("alpha"):
        device, token = device_register(
            name="Ewa's phone", phone_number="+48500100300", bitrix24_user_id=9, country="PL"
        )
        _add_send_sms()
    with dispatching():
        yield Phone(token), device


@pytest.mark.worker
def test_a_missed_call_texts_the_caller_from_the_phone_and_the_crm_shows_it(
    phone: tuple[Phone, Device], alpha_portal: Any
) -> None:
    bridge, device = phone
    bridge.call("m-sms", number=ANNA, outcome="missed")

    def queued() -> SmsMessage | None:
        with schema_context("alpha"):
            return SmsMessage.objects.filter(call__call_id="m-sms").first()

    sms = wait_for(queued)
    assert (sms.device_id, sms.phone_number, sms.source) == (device.pk, ANNA, "scenario")
    assert sms.text == "Sorry we missed you, Anna Kowalska: we call back soon. Ewa's phone"
    commands = bridge.client.get("/api/bridge/v1/commands/").json()["commands"]
    [command] = [c for c in commands if c["type"] == "send_sms"]
    assert (command["sms_id"], command["phone_number"]) == (sms.sms_id, ANNA)
    ack = bridge.client.post(
        f"/api/bridge/v1/commands/{command['command_id']}/ack/", {"status": "done"}, format="json"
    )
    assert ack.status_code == 200
    sent = bridge.client.post(
        "/api/bridge/v1/sms/", _event("sms.sent", sms.sms_id, at=timezone.now()), format="json"
    )
    assert sent.status_code == 200

    def commented() -> dict[str, Any] | None:
        return next(
            (c for c in alpha_portal.state.comments.values() if "SMS sent to" in c["COMMENT"]),
            None,
        )

    comment = wait_for(commented)
    assert (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == ("contact", 12)
    assert sms.text in comment["COMMENT"]
    with schema_context("alpha"):
        run = ActionRun.objects.get(call__call_id="m-sms", action_type="send_sms")
        assert run.status == "done"
        assert wait_for(lambda: ActionRun.objects.get(pk=run.pk).result.get("status") == "sent")


def test_the_guards_each_say_why(alpha: Tenant, device: Device) -> None:
    assert sms_guard_problem(phone_number="") == "The number is hidden: no SMS."
    landline = sms_guard_problem(phone_number="+48221234567")
    assert landline == "No SMS to +48221234567: it is a landline."
    assert "short code" in (sms_guard_problem(phone_number="+4880") or "")
    assert sms_guard_problem(phone_number=ANNA) is None
    sms_send(
        device=device,
        phone_number=ANNA,
        text="Hi",
        source=SmsMessage.Source.SCENARIO,
        intent_key="run:1",
    )
    again = sms_guard_problem(phone_number=ANNA, intent_key="run:2")
    assert again is not None
    assert "at most one SMS per 24 h" in again
    # Its own run again (a rerun after a crash) is no second SMS, and not refused for it.
    assert sms_guard_problem(phone_number=ANNA, intent_key="run:1") is None
    # The tenant's settings turn each guard off.
    SmsSettings.objects.update_or_create(
        singleton=1, defaults={"mobile_only": False, "once_per_hours": 0}
    )
    assert sms_guard_problem(phone_number="+48221234567") is None
    assert sms_guard_problem(phone_number=ANNA, intent_key="run:3") is None


def test_a_failed_sms_of_a_scenario_does_not_count_against_the_limit(
    alpha: Tenant, device: Device
) -> None:
    sms = sms_send(
        device=device,
        phone_number=ANNA,
        text="Hi",
        source=SmsMessage.Source.SCENARIO,
        intent_key="run:10",
    )
    SmsMessage.objects.filter(pk=sms.pk).update(status="failed")
    assert sms_guard_problem(phone_number=ANNA, intent_key="run:11") is None
    SmsMessage.objects.filter(pk=sms.pk).update(
        status="sent", created_at=timezone.now() - timedelta(hours=25)
    )
    assert sms_guard_problem(phone_number=ANNA, intent_key="run:11") is None
