"""One request builder per Bitrix24 method, and a client that runs them (alone or in a batch).

A builder returns a ``Req``: the method, its parameters exactly as Bitrix24 wants them, whether
sending it twice is harmless, and how to read its result into plain Python values (legacy
``crm.*`` methods answer numbers as strings; empty objects arrive as ``[]``). Building requests
without running them is what lets a flow put several of them into one ``batch``.

Batch parameters travel as query strings, where ``True`` would become ``"True"``: builders use
``1``/``0`` or ``"Y"``/``"N"`` instead of booleans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from crm.errors import Bitrix24Error
from crm.mapping import as_int
from crm.session import MAX_ATTEMPTS, Bitrix24Session

T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Req(Generic[T]):
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], T] = _identity
    idempotent: bool = True


class Bitrix24Client:
    """Runs requests through the tenant's session."""

    def __init__(self, session: Bitrix24Session | None = None) -> None:
        self.session = session or Bitrix24Session.for_tenant()
        # `total` of each command of the last batch (list methods), for paging.
        self.last_totals: dict[str, int] = {}

    def run(
        self,
        req: Req[T],
        *,
        deadline: float | None = None,
        intent_key: str = "",
        max_attempts: int = MAX_ATTEMPTS,
    ) -> T:
        response = self.session.call(
            req.method,
            req.params,
            idempotent=req.idempotent,
            deadline=deadline,
            intent_key=intent_key,
            max_attempts=max_attempts,
        )
        return req.parse(response.result)

    def run_batch(
        self,
        reqs: dict[str, Req[Any]],
        *,
        deadline: float | None = None,
        halt: bool = False,
        intent_key: str = "",
    ) -> dict[str, Any]:
        """Each key's parsed result, or the ``Bitrix24Error`` that command failed with."""
        response = self.session.batch(
            {key: (r.method, r.params) for key, r in reqs.items()},
            halt=halt,
            idempotent=all(r.idempotent for r in reqs.values()),
            deadline=deadline,
            intent_key=intent_key,
        )
        self.last_totals = response.totals
        out: dict[str, Any] = {}
        for key, req in reqs.items():
            if key in response.errors:
                out[key] = response.errors[key]
            elif key in response.results:
                try:
                    out[key] = req.parse(response.results[key])
                except (TypeError, ValueError, KeyError) as exc:
                    out[key] = Bitrix24Error(f"Unexpected result of {req.method}: {exc}")
            else:
                out[key] = Bitrix24Error(f"{req.method} was not executed (batch halted)")
        return out


# ----------------------------------------------------------------------------------------------
# Result readers


def _int(value: Any) -> int:
    parsed = as_int(value)
    if parsed is None:
        raise ValueError(f"expected an id, got {value!r}")
    return parsed


def _rows(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        value = list(value.values())
    return [row for row in value or [] if isinstance(row, dict)]


def _hits(value: Any) -> dict[str, list[int]]:
    """findbycomm: ``{"CONTACT": [12]}``, or ``[]`` when nothing matched (REFERENCE 3.1)."""
    if not isinstance(value, dict):
        return {}
    return {str(k).upper(): [int(i) for i in v or []] for k, v in value.items()}


def _bool(value: Any) -> bool:
    return value is True or value in (1, "1", "Y", "true")


def _optional_int(value: Any) -> int | None:
    return as_int(value)


# ----------------------------------------------------------------------------------------------
# General


def scope() -> Req[list[str]]:
    return Req("scope", {}, lambda v: [str(s) for s in v or []])


def batch_reference(key: str, *path: str | int) -> str:
    """``$result[key][path…]``: a batch command's parameter taken from an earlier result."""
    return f"$result[{key}]" + "".join(f"[{p}]" for p in path)


# ----------------------------------------------------------------------------------------------
# CRM


def duplicate_findbycomm(
    values: list[str], entity_type: str | None = None
) -> Req[dict[str, list[int]]]:
    """Contacts, companies and leads with one of these numbers (`entity_type`: of that type
    only; omitted, all three, but 20 hits of one type drop the others: REFERENCE 3.1)."""
    params: dict[str, Any] = {"type": "PHONE", "values": list(values)}
    if entity_type:
        params["entity_type"] = entity_type
    return Req("crm.duplicate.findbycomm", params, _hits)


def entity_list(
    b24_type: str,
    *,
    filter: dict[str, Any],
    select: list[str],
    order: dict[str, str] | None = None,
    start: int = 0,
) -> Req[list[dict[str, Any]]]:
    params: dict[str, Any] = {"filter": filter, "select": select, "start": start}
    if order:
        params["order"] = order
    return Req(f"crm.{b24_type.lower()}.list", params, _rows)


def entity_get(b24_type: str, entity_id: int) -> Req[dict[str, Any]]:
    return Req(f"crm.{b24_type.lower()}.get", {"id": int(entity_id)})


def entity_add(b24_type: str, fields: dict[str, Any]) -> Req[int]:
    return Req(
        f"crm.{b24_type.lower()}.add",
        {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}},
        _int,
        idempotent=False,
    )


def entity_update(b24_type: str, entity_id: int, fields: dict[str, Any]) -> Req[bool]:
    return Req(f"crm.{b24_type.lower()}.update", {"id": int(entity_id), "fields": fields}, _bool)


def _field_map(value: Any) -> dict[str, dict[str, Any]]:
    """``crm.*.fields``: field name -> its description (``[]`` when a portal has none)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, dict)}


def entity_fields(b24_type: str) -> Req[dict[str, dict[str, Any]]]:
    return Req(f"crm.{b24_type.lower()}.fields", {}, _field_map)


def category_list(entity_type_id: int = 2, start: int = 0) -> Req[list[dict[str, Any]]]:
    def parse(value: Any) -> list[dict[str, Any]]:
        if isinstance(value, dict):
            return _rows(value.get("categories"))
        return _rows(value)

    return Req("crm.category.list", {"entityTypeId": entity_type_id, "start": start}, parse)


def status_list(start: int = 0) -> Req[list[dict[str, Any]]]:
    return Req("crm.status.list", {"order": {"SORT": "ASC"}, "start": start}, _rows)


def activity_add(fields: dict[str, Any]) -> Req[int]:
    return Req("crm.activity.add", {"fields": fields}, _int, idempotent=False)


def activity_update(activity_id: int, fields: dict[str, Any]) -> Req[bool]:
    return Req("crm.activity.update", {"id": int(activity_id), "fields": fields}, _bool)


def activity_list(filter: dict[str, Any], select: list[str]) -> Req[list[dict[str, Any]]]:
    return Req("crm.activity.list", {"filter": filter, "select": select}, _rows)


def activity_get(activity_id: int) -> Req[dict[str, Any]]:
    return Req(
        "crm.activity.get", {"id": int(activity_id)}, lambda v: v if isinstance(v, dict) else {}
    )


def _id_of(value: Any) -> int:
    """``crm.activity.todo.*``: ``{"id": 999}``."""
    return _int((value or {}).get("id") if isinstance(value, dict) else None)


def todo_add(
    *,
    owner_type_id: int,
    owner_id: int,
    deadline: str,
    title: str,
    description: str,
    responsible_id: int,
) -> Req[int]:
    params = {
        "ownerTypeId": int(owner_type_id),
        "ownerId": int(owner_id),
        "deadline": deadline,
        "title": title,
        "description": description,
        "responsibleId": int(responsible_id),
    }
    return Req("crm.activity.todo.add", params, _id_of, idempotent=False)


def todo_update_deadline(
    activity_id: int, *, owner_type_id: int, owner_id: int, deadline: str
) -> Req[int]:
    params = {
        "id": int(activity_id),
        "ownerTypeId": int(owner_type_id),
        "ownerId": int(owner_id),
        "value": deadline,
    }
    return Req("crm.activity.todo.updateDeadline", params, _id_of)


def todo_update_description(
    activity_id: int, *, owner_type_id: int, owner_id: int, text: str
) -> Req[int]:
    params = {
        "id": int(activity_id),
        "ownerTypeId": int(owner_type_id),
        "ownerId": int(owner_id),
        "value": text,
    }
    return Req("crm.activity.todo.updateDescription", params, _id_of)


def timeline_comment_add(entity_type: str, entity_id: int, comment: str) -> Req[int]:
    # Only lower-case `fields` is accepted since crm 23.100.0 (REFERENCE 1.1).
    return Req(
        "crm.timeline.comment.add",
        {"fields": {"ENTITY_ID": int(entity_id), "ENTITY_TYPE": entity_type, "COMMENT": comment}},
        _int,
        idempotent=False,
    )


def automation_trigger(target: str, code: str) -> Req[bool]:
    return Req("crm.automation.trigger", {"target": target, "code": code}, _bool, idempotent=False)


# ----------------------------------------------------------------------------------------------
# Telephony


def externalcall_register(params: dict[str, Any]) -> Req[dict[str, Any]]:
    return Req("telephony.externalcall.register", params, dict, idempotent=False)


def externalcall_finish(params: dict[str, Any]) -> Req[dict[str, Any]]:
    return Req("telephony.externalcall.finish", params, dict, idempotent=False)


def externalcall_show(call_id: str, user_ids: list[int]) -> Req[bool]:
    return Req(
        "telephony.externalcall.show", {"CALL_ID": call_id, "USER_ID": list(user_ids)}, _bool
    )


def externalcall_hide(call_id: str, user_ids: list[int]) -> Req[bool]:
    return Req(
        "telephony.externalcall.hide", {"CALL_ID": call_id, "USER_ID": list(user_ids)}, _bool
    )


def externalline_get() -> Req[list[dict[str, Any]]]:
    return Req("telephony.externalLine.get", {}, _rows)


def externalline_add(number: str, name: str) -> Req[Any]:
    # CRM_AUTO_CREATE N: SIMtrix makes the leads it wants itself (the unknown-number scenario).
    params = {"NUMBER": number, "NAME": name, "CRM_AUTO_CREATE": "N"}
    return Req("telephony.externalLine.add", params, idempotent=False)


def externalline_update(number: str, name: str) -> Req[Any]:
    params = {"NUMBER": number, "NAME": name, "CRM_AUTO_CREATE": "N"}
    return Req("telephony.externalLine.update", params)


def externalline_delete(number: str) -> Req[Any]:
    return Req("telephony.externalLine.delete", {"NUMBER": number})


def externalcall_attach_record(
    call_id: str, filename: str, content_b64: str
) -> Req[dict[str, Any]]:
    return Req(
        "telephony.externalcall.attachrecord",
        {"CALL_ID": call_id, "FILENAME": filename, "FILE_CONTENT": content_b64},
        lambda v: v if isinstance(v, dict) else {},
    )


# ----------------------------------------------------------------------------------------------
# Users, tasks, notifications


def user_get(start: int = 0) -> Req[list[dict[str, Any]]]:
    # ADMIN_MODE lists inactive users too, so the directory can tell who left.
    return Req("user.get", {"sort": "ID", "order": "ASC", "ADMIN_MODE": "Y", "start": start}, _rows)


def department_get(start: int = 0) -> Req[list[dict[str, Any]]]:
    # No `sort`/`order`: ID order is the default, and the sandbox reads `sort` as a filter on
    # the SORT field (reported).
    return Req("department.get", {"START": start}, _rows)


def timeman_status(user_id: int) -> Req[str]:
    """A user's work-day status: OPENED, CLOSED, PAUSED, EXPIRED (REFERENCE 5.7)."""
    return Req(
        "timeman.status",
        {"USER_ID": int(user_id)},
        lambda value: str((value or {}).get("STATUS") or "") if isinstance(value, dict) else "",
    )


def task_add(fields: dict[str, Any]) -> Req[int]:
    def parse(value: Any) -> int:
        task = value.get("task") if isinstance(value, dict) else None
        return _int((task or {}).get("id"))

    return Req("tasks.task.add", {"fields": fields}, parse, idempotent=False)


def task_complete(task_id: int) -> Req[bool]:
    return Req("tasks.task.complete", {"taskId": int(task_id)}, lambda v: True)


def task_get(task_id: int, select: list[str]) -> Req[dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        task = value.get("task") if isinstance(value, dict) else None
        return task if isinstance(task, dict) else {}

    return Req("tasks.task.get", {"taskId": int(task_id), "select": select}, parse)


def task_update(task_id: int, fields: dict[str, Any]) -> Req[bool]:
    return Req("tasks.task.update", {"taskId": int(task_id), "fields": fields}, lambda v: True)


def task_comment_add(task_id: int, text: str) -> Req[int]:
    # The old task.* methods read parameters by position: TASKID first, then FIELDS.
    return Req(
        "task.commentitem.add",
        {"TASKID": int(task_id), "FIELDS": {"POST_MESSAGE": text}},
        _int,
        idempotent=False,
    )


def task_list(filter: dict[str, Any], select: list[str]) -> Req[list[dict[str, Any]]]:
    def parse(value: Any) -> list[dict[str, Any]]:
        return _rows(value.get("tasks") if isinstance(value, dict) else value)

    return Req("tasks.task.list", {"filter": filter, "select": select}, parse)


def notify_system_add(user_id: int, message: str, tag: str = "") -> Req[int | None]:
    params: dict[str, Any] = {"USER_ID": int(user_id), "MESSAGE": message}
    if tag:
        # A TAG replaces earlier notifications with the same tag, so a resend is harmless;
        # via webhook it needs a CLIENT_ID too (REFERENCE 5.4).
        params.update({"TAG": tag, "CLIENT_ID": "simtrix"})
    return Req("im.notify.system.add", params, _optional_int, idempotent=bool(tag))


# ----------------------------------------------------------------------------------------------
# Events (an application's)


def event_get() -> Req[list[dict[str, Any]]]:
    return Req("event.get", {}, _rows)


def event_bind(event: str, handler: str) -> Req[Any]:
    return Req("event.bind", {"event": event, "handler": handler}, idempotent=False)


def event_unbind(event: str, handler: str) -> Req[Any]:
    return Req("event.unbind", {"event": event, "handler": handler})


# ----------------------------------------------------------------------------------------------
# SMS provider (messageservice: an application's only)


def _codes(value: Any) -> list[str]:
    return [str(code) for code in value or [] if isinstance(code, str)]


def messageservice_sender_list() -> Req[list[str]]:
    return Req("messageservice.sender.list", {}, _codes)


def messageservice_sender_add(code: str, handler: str, name: str, description: str) -> Req[bool]:
    params = {
        "CODE": code,
        "TYPE": "SMS",
        "HANDLER": handler,
        "NAME": name,
        "DESCRIPTION": description,
    }
    return Req("messageservice.sender.add", params, _bool, idempotent=False)


def messageservice_message_status_update(code: str, message_id: str, status: str) -> Req[bool]:
    params = {"CODE": code, "MESSAGE_ID": message_id, "STATUS": status}
    return Req("messageservice.message.status.update", params, _bool)
