from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crm.errors import Bitrix24AuthTypeDenied, Bitrix24PermanentError
from crm.mapping import origin_id
from crm.operations import crm_batch
from crm.selectors import crm_find_by_phone
from crm.services import (
    crm_activity_log_call,
    crm_activity_set_description,
    crm_automation_trigger,
    crm_call_attach_record,
    crm_call_finish,
    crm_call_hide,
    crm_call_register,
    crm_call_show,
    crm_deal_create_with_contact,
    crm_entity_url,
    crm_notify,
    crm_notify_many,
    crm_task_complete,
    crm_task_create,
    crm_timeline_comment_add,
)
from crm.tests.conftest import top_level


def _register(
    key: str, *, phone: str = "+48600111222", entity: Any = ("contact", 12), **kw: Any
) -> Any:
    return crm_call_register(
        intent_key=f"{key}:register",
        user_id=5,
        phone=phone,
        direction=kw.get("direction", "incoming"),
        started_at=timezone.localtime() - timedelta(minutes=2),
        line_number="+48500100200",
        external_call_id=f"ext-{key}",
        entity=entity,
        show=kw.get("show", True),
    )


def _activity(portal: Any, activity_id: int) -> dict[str, Any]:
    return next(a for a in portal.control.activities() if int(a["ID"]) == activity_id)


def test_answered_known_call_takes_three_requests(portal: Any) -> None:
    lookup = crm_find_by_phone(phone="+48 600 111 222")
    assert lookup.entity is not None
    registered = _register("svc:answered", entity=(lookup.entity.type, lookup.entity.id))
    finished = crm_call_finish(
        intent_key="svc:answered:finish",
        b24_call_id=registered.b24_call_id,
        user_id=5,
        duration_s=95,
        outcome="answered",
    )

    assert registered.entity == ("contact", 12)
    assert (finished.status_code, finished.duration_s, finished.entity) == (
        "200",
        95,
        ("contact", 12),
    )
    assert finished.activity_id is not None
    activity = _activity(portal, finished.activity_id)
    assert activity["ORIGIN_ID"] == f"VI_{registered.b24_call_id}"
    assert len(top_level(portal)) == 3


def test_missed_call_is_finished_as_missed_with_no_duration(portal: Any) -> None:
    registered = _register("svc:missed")
    finished = crm_call_finish(
        intent_key="svc:missed:finish",
        b24_call_id=registered.b24_call_id,
        user_id=5,
        duration_s=12,
        outcome="missed",
    )

    assert (finished.status_code, finished.duration_s) == ("304", 0)
    statistic = portal.control.calls()["finished"][0]["STATISTIC"]
    assert (str(statistic["CALL_FAILED_CODE"]), int(statistic["CALL_DURATION"])) == ("304", 0)


def test_unknown_caller_call_has_no_activity_and_says_why(portal: Any) -> None:
    registered = _register("svc:unknown", phone="+48500999888", entity=None)
    finished = crm_call_finish(
        intent_key="svc:unknown:finish",
        b24_call_id=registered.b24_call_id,
        user_id=5,
        duration_s=0,
        outcome="no_answer",
    )

    assert registered.entity is None
    assert finished.activity_id is None
    assert finished.activity_error
    assert finished.status_code == "480"


def test_deal_cannot_be_bound_to_a_call(portal: Any) -> None:
    with pytest.raises(ValueError, match="deal"):
        _register("svc:deal", entity=("deal", 71))


def test_call_card_show_and_hide(portal: Any) -> None:
    registered = _register("svc:card", show=False)

    assert crm_call_show(b24_call_id=registered.b24_call_id, user_ids=[5, 9]) is True
    assert crm_call_hide(b24_call_id=registered.b24_call_id, user_ids=[9]) is True
    crm_call_finish(
        intent_key="svc:card:finish", b24_call_id=registered.b24_call_id, user_id=5,
        duration_s=3, outcome="answered",
    )  # fmt: skip
    assert crm_call_show(b24_call_id=registered.b24_call_id, user_ids=[5]) is False


def test_recording_is_attached_to_the_finished_call(portal: Any) -> None:
    registered = _register("svc:record")
    crm_call_finish(
        intent_key="svc:record:finish", b24_call_id=registered.b24_call_id, user_id=5,
        duration_s=30, outcome="answered",
    )  # fmt: skip

    file_id = crm_call_attach_record(
        b24_call_id=registered.b24_call_id, filename="call.mp3", content=b"ID3\x03fake-mp3"
    )

    assert isinstance(file_id, int)
    assert portal.control.file(file_id)["SIZE"] == len(b"ID3\x03fake-mp3")
    with pytest.raises(ValueError, match="mp3"):
        crm_call_attach_record(b24_call_id=registered.b24_call_id, filename="a.m4a", content=b"x")


def test_finish_resent_after_it_was_done_finds_the_activity(portal: Any) -> None:
    from crm.models import Intent

    registered = _register("svc:refinish")
    done = crm_call_finish(
        intent_key="svc:refinish:finish", b24_call_id=registered.b24_call_id, user_id=5,
        duration_s=30, outcome="answered",
    )  # fmt: skip
    # As if that answer had been lost: the intent does not know it was done.
    Intent.objects.filter(key="svc:refinish:finish").update(status="ambiguous", result=None)

    again = crm_call_finish(
        intent_key="svc:refinish:finish", b24_call_id=registered.b24_call_id, user_id=5,
        duration_s=30, outcome="answered",
    )  # fmt: skip

    assert again.activity_id == done.activity_id
    assert len(top_level(portal, "telephony.externalcall.finish")) == 1


def test_telephony_refused_for_webhooks_falls_back_to_an_activity(portal: Any) -> None:
    portal.control.set_webhook_telephony_denied(True)

    with pytest.raises(Bitrix24AuthTypeDenied) as caught:
        _register("svc:denied")
    assert caught.value.code == "WRONG_AUTH_TYPE"

    activity_id = crm_activity_log_call(
        intent_key="svc:denied:activity",
        entity=("contact", 12),
        user_id=5,
        phone="600 111 222",
        direction="incoming",
        started_at=timezone.localtime() - timedelta(minutes=3),
        duration_s=0,
        outcome="missed",
    )

    activity = _activity(portal, activity_id)
    assert activity["SUBJECT"] == "Missed incoming call from +48600111222"
    assert (int(activity["OWNER_TYPE_ID"]), int(activity["OWNER_ID"])) == (3, 12)
    assert (int(activity["DIRECTION"]), activity["COMPLETED"]) == (1, "N")
    assert activity["ORIGIN_ID"] == origin_id("svc:denied:activity")

    crm_activity_set_description(activity_id=activity_id, text="Wants a quote")
    assert _activity(portal, activity_id)["DESCRIPTION"] == "Wants a quote"


def test_a_call_logged_as_an_activity_can_share_a_batch(portal: Any) -> None:
    before = len(top_level(portal))
    with crm_batch() as batch:
        logged = batch.add(
            crm_activity_log_call, intent_key="svc:batch:activity", entity=("contact", 12),
            user_id=5, phone="600 111 222", direction="incoming",
            started_at=timezone.localtime() - timedelta(minutes=3), duration_s=0,
            outcome="missed",
        )  # fmt: skip
        notified = batch.add(crm_notify, user_id=5, message="Missed call from Anna")
    assert len(top_level(portal)) == before + 1
    assert _activity(portal, logged.result())["SUBJECT"] == "Missed incoming call from +48600111222"
    assert isinstance(notified.result(), int)


def test_deal_for_a_new_number_creates_its_contact(portal: Any) -> None:
    created = crm_deal_create_with_contact(
        intent_key="svc:deal:new",
        phone="+48 500 777 888",
        title="Call from +48 500 777 888",
        category_id=1,
        stage_id="C1:NEW",
        responsible_id=9,
    )
    deal_id, contact_id = created

    lookup = crm_find_by_phone(phone="+48500777888")
    assert lookup.entity is not None
    assert (lookup.entity.type, lookup.entity.id) == ("contact", contact_id)
    assert [(d.id, d.pipeline, d.stage) for d in lookup.deals] == [(deal_id, "Contracts", "New")]
    assert lookup.responsible is not None
    assert lookup.responsible.id == 9
    assert created.deal_id == deal_id


def test_deal_for_a_known_contact_reuses_it(portal: Any) -> None:
    created = crm_deal_create_with_contact(
        intent_key="svc:deal:known", phone="+48600111222", title="Another deal",
        category_id=0, stage_id="", responsible_id=5,
    )  # fmt: skip
    assert created.contact_id == 12
    assert len(portal.control.entities("contact")) == 5


def test_task_create_and_complete(portal: Any) -> None:
    deadline = timezone.localtime() + timedelta(hours=2)
    task_id = crm_task_create(
        intent_key="svc:task",
        title="Call back Anna",
        description="Missed call",
        responsible_id=5,
        deadline=deadline,
        bindings=[("contact", 12), ("deal", 71)],
    )
    task = next(t for t in portal.control.tasks() if int(t["ID"]) == task_id)
    assert task["UF_CRM_TASK"] == ["C_12", "D_71"]
    assert int(task["RESPONSIBLE_ID"]) == 5

    crm_task_complete(task_id=task_id)
    task = next(t for t in portal.control.tasks() if int(t["ID"]) == task_id)
    assert int(task["STATUS"]) == 5


def test_notifications_timeline_and_automation(portal: Any) -> None:
    note_id = crm_notify(user_id=5, message="Missed call from Anna")
    comment_id = crm_timeline_comment_add(entity=("contact", 12), text="Called about the contract")
    crm_automation_trigger(entity=("deal", 71), code="missed_call")

    assert isinstance(note_id, int)
    assert [n["MESSAGE"] for n in portal.control.notifications()] == ["Missed call from Anna"]
    assert [c["COMMENT"] for c in portal.control.comments()] == ["Called about the contract"]
    assert isinstance(comment_id, int)
    assert [(t["TARGET"], t["CODE"]) for t in portal.control.triggers()] == [
        ("DEAL_71", "missed_call")
    ]


def test_tagged_notification_sent_twice_replaces_itself(portal: Any) -> None:
    crm_notify(user_id=5, message="first", intent_key="svc:notify")
    crm_notify(user_id=5, message="again", intent_key="svc:notify")
    crm_notify_many(user_ids=[5, 9, 5], message="to both", tag="svc:many")

    messages = sorted((int(n["USER_ID"]), n["MESSAGE"]) for n in portal.control.notifications())
    assert messages == [(5, "again"), (5, "to both"), (9, "to both")]


def test_batch_sends_independent_writes_in_one_request(portal: Any) -> None:
    registered = _register("svc:batch")
    before = len(top_level(portal))

    with crm_batch() as batch:
        finished = batch.add(
            crm_call_finish, intent_key="svc:batch:finish", b24_call_id=registered.b24_call_id,
            user_id=5, duration_s=0, outcome="missed",
        )  # fmt: skip
        notified = batch.add(crm_notify, user_id=5, message="Missed call from Anna")
        task = batch.add(
            crm_task_create, intent_key="svc:batch:task", title="Call back", description="",
            responsible_id=5, deadline=None, bindings=[("contact", 12)],
        )  # fmt: skip
        broken = batch.add(crm_timeline_comment_add, entity=("contact", 999999), text="x")

    assert len(top_level(portal)) == before + 1
    assert finished.result().status_code == "304"
    assert finished.result().activity_id is not None
    assert isinstance(notified.result(), int)
    assert isinstance(task.result(), int)
    with pytest.raises(Bitrix24PermanentError):
        broken.result()

    # The intents are recorded: the same batch again sends only what has no intent key.
    with crm_batch() as again:
        same_task = again.add(
            crm_task_create, intent_key="svc:batch:task", title="Call back", description="",
            responsible_id=5, deadline=None, bindings=[("contact", 12)],
        )  # fmt: skip
    assert same_task.result() == task.result()
    assert len(top_level(portal)) == before + 1


def test_entity_url(portal: Any) -> None:
    assert crm_entity_url(entity=("lead", 25)) == f"{portal.url}/crm/lead/details/25/"
