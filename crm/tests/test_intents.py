from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crm import session
from crm.errors import Bitrix24IntentInProgress, Bitrix24PermanentError, Bitrix24TransientError
from crm.mapping import origin_id
from crm.models import Intent
from crm.services import crm_call_register, crm_lead_create, crm_task_create
from crm.tests.conftest import top_level


def _lead(key: str, phone: str = "+48500100001") -> int:
    return crm_lead_create(
        intent_key=key,
        phone=phone,
        title="Call from a new number",
        status_id="NEW",
        source_id="CALL",
        responsible_id=5,
    )


def _leads_with(portal: Any, key: str) -> list[dict[str, Any]]:
    return [e for e in portal.control.entities("lead") if e.get("ORIGIN_ID") == origin_id(key)]


def test_done_intent_is_answered_from_the_table(portal: Any) -> None:
    first = _lead("test:intent:done")
    second = _lead("test:intent:done")

    assert first == second
    assert len(top_level(portal, "crm.lead.add")) == 1
    intent = Intent.objects.get(key="test:intent:done")
    assert (intent.status, intent.result, intent.attempts) == ("done", first, 1)


def test_timeout_after_the_portal_created_the_lead_does_not_create_a_second(
    portal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The portal takes 0.35 s, SIMtrix waits 0.25 s: the lead exists, the answer never came.
    monkeypatch.setattr(session, "READ_TIMEOUT", 0.25)
    portal.set_fault("slow", delay_ms=350, method="crm.lead.add")

    lead_id = _lead("test:intent:timeout")

    assert [int(lead["ID"]) for lead in _leads_with(portal, "test:intent:timeout")] == [lead_id]
    assert len(top_level(portal, "crm.lead.add")) == 1  # found by its marker, not resent
    assert len(top_level(portal, "crm.lead.list")) == 1
    assert Intent.objects.get(key="test:intent:timeout").status == "done"


def test_server_error_with_no_lead_behind_it_is_resent_once(portal: Any) -> None:
    portal.set_fault("fail_next", count=1, method="crm.lead.add")

    lead_id = _lead("test:intent:500")

    assert [int(lead["ID"]) for lead in _leads_with(portal, "test:intent:500")] == [lead_id]
    assert [r["status"] for r in top_level(portal, "crm.lead.add")] == [500, 200]
    assert len(top_level(portal, "crm.lead.list")) == 1  # looked before resending


def test_worker_that_died_after_sending_is_recovered_by_search(portal: Any) -> None:
    lead_id = _lead("test:intent:crash")
    # As if the worker died after the portal created the lead, before recording it.
    Intent.objects.filter(key="test:intent:crash").update(
        status=Intent.Status.SENDING,
        result=None,
        claimed_until=timezone.now() - timedelta(seconds=1),
    )

    assert _lead("test:intent:crash") == lead_id
    assert len(top_level(portal, "crm.lead.add")) == 1


def test_intent_claimed_by_another_worker_is_not_sent(portal: Any) -> None:
    Intent.objects.create(
        key="test:intent:busy",
        method="crm.lead.add",
        status=Intent.Status.SENDING,
        claimed_until=timezone.now() + timedelta(seconds=60),
    )

    with pytest.raises(Bitrix24IntentInProgress) as caught:
        _lead("test:intent:busy")

    assert caught.value.transient
    assert top_level(portal) == []


def test_refused_create_can_be_sent_again_later(portal: Any) -> None:
    with pytest.raises(Bitrix24PermanentError):
        crm_lead_create(
            intent_key="test:intent:refused",
            phone="+48500100002",
            title="Call",
            status_id="NO_SUCH_STATUS",
            source_id="CALL",
            responsible_id=5,
        )
    assert Intent.objects.get(key="test:intent:refused").status == "failed"

    lead_id = _lead("test:intent:refused")
    assert [int(lead["ID"]) for lead in _leads_with(portal, "test:intent:refused")] == [lead_id]


def _register(key: str, **overrides: Any) -> Any:
    params = {
        "intent_key": key,
        "user_id": 5,
        "phone": "+48600111222",
        "direction": "incoming",
        "started_at": timezone.localtime(),
        "line_number": "+48500100200",
        "external_call_id": f"ext-{key}",
        "entity": ("contact", 12),
        "show": False,
    }
    return crm_call_register(**{**params, **overrides})


def test_register_resent_after_timeouts_gives_the_same_call(
    portal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every attempt reaches the portal, none is answered in time...
    monkeypatch.setattr(session, "READ_TIMEOUT", 0.25)
    portal.set_fault("slow", delay_ms=300, method="telephony.externalcall.register")
    with pytest.raises(Bitrix24TransientError) as caught:
        _register("test:intent:register")
    assert caught.value.ambiguous
    assert Intent.objects.get(key="test:intent:register").status == "ambiguous"
    portal.clear_faults()
    time.sleep(0.1)  # the portal finishes the last attempt SIMtrix stopped waiting for

    # ...and the retry later is still safe: Bitrix24 returns the call it already registered
    # (same user, number, type, line and EXTERNAL_CALL_ID, within 30 minutes; REFERENCE 4.1).
    registered = _register("test:intent:register")

    assert len(top_level(portal, "telephony.externalcall.register")) == 4
    active = portal.control.calls()["active"]
    assert [call["CALL_ID"] for call in active] == [registered.b24_call_id]
    assert registered.entity == ("contact", 12)


def test_register_is_not_resent_after_the_dedup_window(portal: Any) -> None:
    Intent.objects.create(
        key="test:intent:old-register",
        method="telephony.externalcall.register",
        status=Intent.Status.AMBIGUOUS,
    )
    Intent.objects.filter(key="test:intent:old-register").update(
        created_at=timezone.now() - timedelta(minutes=40)
    )

    with pytest.raises(Bitrix24PermanentError) as caught:
        _register("test:intent:old-register")

    assert caught.value.code == "INTENT_EXPIRED"
    assert top_level(portal) == []


def test_task_created_before_a_timeout_is_found_again(
    portal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "READ_TIMEOUT", 0.25)
    portal.set_fault("slow", delay_ms=350, method="tasks.task.add")
    # Another intent's identical task (a second missed call) must not be taken for ours.
    other = crm_task_create(
        intent_key="test:intent:task-other",
        title="Call back +48 600 111 222",
        description="",
        responsible_id=5,
        deadline=None,
        bindings=[],
    )

    task_id = crm_task_create(
        intent_key="test:intent:task",
        title="Call back +48 600 111 222",
        description="Missed call",
        responsible_id=5,
        deadline=timezone.localtime() + timedelta(hours=1),
        bindings=[("contact", 12)],
    )

    assert task_id != other
    tasks = [t for t in portal.control.tasks() if t["TITLE"] == "Call back +48 600 111 222"]
    assert sorted(t["ID"] for t in tasks) == sorted([other, task_id])
    assert len(top_level(portal, "tasks.task.add")) == 2
