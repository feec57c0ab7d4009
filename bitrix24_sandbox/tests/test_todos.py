"""Universal activities (crm.activity.todo.*) and task comments (task.commentitem.add), as the
b24restdocs pages describe them, over real HTTPS.

Run alone (no Django, no database):
    .venv/bin/python -m pytest bitrix24_sandbox -p no:django --confcutdir bitrix24_sandbox -q
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bitrix24_sandbox import SandboxPortal
from bitrix24_sandbox.tests.test_sandbox import call, err, make_session, ok


@pytest.fixture(scope="module")
def portal() -> Iterator[SandboxPortal]:
    portal = SandboxPortal(seed=True, drain_per_second=None, bucket_size=None).start()
    yield portal
    portal.stop()


@pytest.fixture
def http(portal: SandboxPortal) -> Iterator[requests.Session]:
    portal.reset()
    session = make_session(portal)
    yield session
    session.close()


def _todo(http: requests.Session, hook: str, **overrides: Any) -> int:
    params = {
        "ownerTypeId": 3,
        "ownerId": 12,
        "deadline": "2026-11-18T12:00:00+01:00",
        "title": "Call back Anna",
        "description": "Missed call at 10:00",
        "responsibleId": 5,
        **overrides,
    }
    result = ok(http, hook, "crm.activity.todo.add", params)
    assert set(result) == {"id"}
    assert isinstance(result["id"], int)
    return int(result["id"])


def test_a_todo_is_an_open_crm_todo_activity_read_back_with_activity_get(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    todo_id = _todo(http, hook)
    act = ok(http, hook, "crm.activity.get", {"id": todo_id})
    assert (act["PROVIDER_ID"], act["OWNER_TYPE_ID"], act["OWNER_ID"]) == ("CRM_TODO", "3", "12")
    assert (act["SUBJECT"], act["DESCRIPTION"], act["RESPONSIBLE_ID"]) == (
        "Call back Anna",
        "Missed call at 10:00",
        "5",
    )
    assert act["COMPLETED"] == "N"
    assert act["DEADLINE"] == "2026-11-18T12:00:00+01:00"
    listed = ok(http, hook, "crm.activity.list", {"filter": {"PROVIDER_ID": "CRM_TODO"}})
    assert [row["ID"] for row in listed] == [str(todo_id)]
    # Completed the way any activity is (there is no todo.complete).
    assert ok(http, hook, "crm.activity.update", {"id": todo_id, "fields": {"COMPLETED": "Y"}})
    assert ok(http, hook, "crm.activity.get", {"id": todo_id})["COMPLETED"] == "Y"


def test_todo_add_refuses_what_the_docs_list(portal: SandboxPortal, http: requests.Session) -> None:
    hook = portal.webhook_url()
    missing = {"ownerTypeId": 3, "ownerId": 12}
    err(
        call(http, hook, "crm.activity.todo.add", missing),
        400,
        "100",
        "Could not find value for parameter {deadline}",
    )
    unknown_owner = {"ownerTypeId": 3, "ownerId": 999, "deadline": "2026-11-18T12:00:00+01:00"}
    err(call(http, hook, "crm.activity.todo.add", unknown_owner), 400, "NOT_FOUND")
    bad_date = {"ownerTypeId": 2, "ownerId": 71, "deadline": "tomorrow"}
    err(call(http, hook, "crm.activity.todo.add", bad_date), 400, "WRONG_DATETIME_FORMAT")


def test_deadline_and_description_change_until_the_todo_is_completed(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    todo_id = _todo(http, hook, ownerTypeId=2, ownerId=71)
    owner = {"id": todo_id, "ownerTypeId": 2, "ownerId": 71}
    moved = ok(
        http,
        hook,
        "crm.activity.todo.updateDeadline",
        {**owner, "value": "2026-11-18T11:00:00+01:00"},
    )
    assert moved == {"id": todo_id}
    described = ok(http, hook, "crm.activity.todo.updateDescription", {**owner, "value": "Again"})
    assert described == {"id": todo_id}
    act = ok(http, hook, "crm.activity.get", {"id": todo_id})
    assert (act["DEADLINE"], act["DESCRIPTION"]) == ("2026-11-18T11:00:00+01:00", "Again")
    # Another owner than the to-do's is not found.
    wrong_owner = {**owner, "ownerId": 74, "value": "x"}
    err(call(http, hook, "crm.activity.todo.updateDescription", wrong_owner), 400, "NOT_FOUND")
    ok(http, hook, "crm.activity.update", {"id": todo_id, "fields": {"COMPLETED": "Y"}})
    err(
        call(
            http,
            hook,
            "crm.activity.todo.updateDeadline",
            {**owner, "value": "2026-11-19T11:00:00+01:00"},
        ),
        400,
        "CAN_NOT_UPDATE_COMPLETED_TODO",
    )


def test_task_comments_take_their_parameters_in_order(
    portal: SandboxPortal, http: requests.Session
) -> None:
    hook = portal.webhook_url()
    task = ok(http, hook, "tasks.task.add", {"fields": {"TITLE": "Call back", "RESPONSIBLE_ID": 5}})
    task_id = int(task["task"]["id"])
    comment_id = ok(
        http,
        hook,
        "task.commentitem.add",
        {"TASKID": task_id, "FIELDS": {"POST_MESSAGE": "Missed again at 10:32"}},
    )
    assert isinstance(comment_id, int)
    assert portal.state.task_comments[comment_id]["TASK_ID"] == task_id
    assert portal.state.task_comments[comment_id]["POST_MESSAGE"] == "Missed again at 10:32"
    # The docs: "the order of parameters in the request must be followed".
    swapped = {"FIELDS": {"POST_MESSAGE": "x"}, "TASKID": task_id}
    assert (
        "taskId"
        in err(call(http, hook, "task.commentitem.add", swapped), 400, "ERROR_CORE")[
            "error_description"
        ]
    )
    empty = {"TASKID": task_id, "FIELDS": {"POST_MESSAGE": " "}}
    err(
        call(http, hook, "task.commentitem.add", empty),
        400,
        "ERROR_CORE",
        "Comment text not specified<br>",
    )
