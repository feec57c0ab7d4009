"""crm's verbs for the scenario actions of issue 18, against the sandbox: a lead's status, a
deal's stage, fields, to-dos (crm.activity.todo.*) and a task's comments and deadline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from crm import session
from crm.models import Intent
from crm.services import (
    crm_deal_set_stage,
    crm_entity_set_fields,
    crm_lead_set_status,
    crm_task_comment_add,
    crm_task_create,
    crm_task_set_deadline,
    crm_task_state,
    crm_todo_complete,
    crm_todo_create,
    crm_todo_set_deadline,
    crm_todo_set_description,
    crm_todo_state,
)
from crm.tests.conftest import top_level


def test_a_leads_status_a_deals_stage_and_fields_are_set_by_name(portal: Any) -> None:
    crm_lead_set_status(lead_id=25, status_id="IN_PROCESS")
    crm_deal_set_stage(deal_id=71, stage_id="C1:NEW")
    crm_entity_set_fields(
        entity=("deal", 71), fields={"UF_CRM_SIM_LINE": "missed", "COMMENTS": "Called"}
    )
    assert portal.state.entities["LEAD"][25]["STATUS_ID"] == "IN_PROCESS"
    deal = portal.state.entities["DEAL"][71]
    assert (deal["STAGE_ID"], deal["UF_CRM_SIM_LINE"], deal["COMMENTS"]) == (
        "C1:NEW", "missed", "Called",
    )  # fmt: skip
    assert [r["method"] for r in top_level(portal)] == [
        "crm.lead.update", "crm.deal.update", "crm.deal.update",
    ]  # fmt: skip


def test_a_todo_is_made_read_moved_described_and_completed(portal: Any) -> None:
    deadline = timezone.localtime() + timedelta(hours=2)
    todo_id = crm_todo_create(
        intent_key="test:todo:1",
        entity=("contact", 12),
        title="Call Anna back",
        description="Missed at 10:00",
        responsible_id=5,
        deadline=deadline,
    )
    stored = portal.state.activities[todo_id]
    assert (stored["PROVIDER_ID"], stored["SUBJECT"], stored["RESPONSIBLE_ID"]) == (
        "CRM_TODO", "Call Anna back", 5,
    )  # fmt: skip
    state = crm_todo_state(activity_id=todo_id)
    assert state.open
    assert state.deadline == deadline.replace(microsecond=0)
    assert state.description == "Missed at 10:00"

    sooner = deadline - timedelta(hours=1)
    crm_todo_set_deadline(activity_id=todo_id, entity=("contact", 12), deadline=sooner)
    crm_todo_set_description(activity_id=todo_id, entity=("contact", 12), text="Twice")
    state = crm_todo_state(activity_id=todo_id)
    assert (state.deadline, state.description) == (sooner.replace(microsecond=0), "Twice")
    crm_todo_complete(activity_id=todo_id)
    assert not crm_todo_state(activity_id=todo_id).open
    # Made once: the same intent again is answered from the intents table.
    assert crm_todo_create(
        intent_key="test:todo:1", entity=("contact", 12), title="Call Anna back",
        description="", responsible_id=5, deadline=deadline,
    ) == todo_id  # fmt: skip
    assert len(top_level(portal, "crm.activity.todo.add")) == 1


def test_a_todo_made_before_a_timeout_is_found_again_not_made_twice(
    portal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The portal takes 0.35 s, SIMtrix waits 0.25 s: the to-do exists, the answer never came.
    monkeypatch.setattr(session, "READ_TIMEOUT", 0.25)
    portal.set_fault("slow", delay_ms=350, method="crm.activity.todo.add")
    kwargs: dict[str, Any] = {
        "entity": ("deal", 71), "title": "Call back", "description": "",
        "responsible_id": 5, "deadline": timezone.localtime() + timedelta(hours=1),
    }  # fmt: skip
    other = crm_todo_create(intent_key="test:todo:other", **kwargs)  # a second missed call's
    todo_id = crm_todo_create(intent_key="test:todo:mine", **kwargs)
    assert todo_id != other
    todos = [a for a in portal.state.activities.values() if a.get("PROVIDER_ID") == "CRM_TODO"]
    assert sorted(a["ID"] for a in todos) == sorted([other, todo_id])
    assert len(top_level(portal, "crm.activity.todo.add")) == 2  # found, not resent
    assert Intent.objects.get(key="test:todo:mine").status == "done"


def test_a_task_takes_a_comment_and_a_new_deadline_and_tells_if_it_is_open(portal: Any) -> None:
    deadline = timezone.localtime() + timedelta(hours=2)
    task_id = crm_task_create(
        intent_key="test:task:1", title="Call back", description="", responsible_id=5,
        deadline=deadline, bindings=[("contact", 12)],
    )  # fmt: skip
    state = crm_task_state(task_id=task_id)
    assert state.open
    assert state.deadline == deadline.replace(microsecond=0)
    comment_id = crm_task_comment_add(task_id=task_id, text="Called again at 10:32.")
    assert portal.state.task_comments[comment_id]["POST_MESSAGE"] == "Called again at 10:32."
    sooner = deadline - timedelta(minutes=30)
    crm_task_set_deadline(task_id=task_id, deadline=sooner)
    assert crm_task_state(task_id=task_id).deadline == sooner.replace(microsecond=0)
    # Completed by someone in Bitrix24.
    done = requests.post(
        portal.webhook_url(5) + "tasks.task.complete",
        json={"taskId": task_id},
        verify=portal.ca_cert_path,
        timeout=10,
    )
    assert done.status_code == 200, done.text
    assert not crm_task_state(task_id=task_id).open
