"""Users, departments, time tracking, tasks, notifications, app/scope info and ``batch``."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from typing import Any

from . import filters as F
from .core import (
    ALL_SCOPES,
    METHODS,
    PORTAL_TZ,
    USER_SCOPES,
    Ctx,
    RestError,
    as_list,
    iso,
    now,
    param,
    parse_datetime,
    php_array,
    rest_method,
    to_bool,
    to_int,
    upper_keys,
)
from .dispatch import execute, record_call
from .params import parse_php_query

# --------------------------------------------------------------------------------------------
# Users and departments (REFERENCE 5.7)

_USER_KINDS: dict[str, str] = {
    "ID": F.INT,
    "ACTIVE": F.BOOL,
    "UF_DEPARTMENT": F.INTS,
    "IS_ONLINE": F.CHAR,
    "NAME": F.STR,
    "LAST_NAME": F.STR,
    "SECOND_NAME": F.STR,
    "EMAIL": F.STR,
    "USER_TYPE": F.STR,
    "UF_PHONE_INNER": F.STR,
    "PERSONAL_MOBILE": F.STR,
    "PERSONAL_PHONE": F.STR,
    "WORK_PHONE": F.STR,
    "WORK_POSITION": F.STR,
    "LAST_ACTIVITY_DATE": F.DT,
    "DATE_REGISTER": F.DT,
}
_USER_PARAMS = {"FILTER", "SORT", "ORDER", "START", "ADMIN_MODE", "SELECT", "FIND", "AUTH"}


def user_row(user: dict[str, Any], scopes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ID": str(user["ID"]),
        "XML_ID": "",
        "ACTIVE": user["ACTIVE"],
        "NAME": user["NAME"],
        "LAST_NAME": user["LAST_NAME"],
        "SECOND_NAME": user["SECOND_NAME"],
        "EMAIL": user["EMAIL"],
        "LAST_LOGIN": iso(user["LAST_ACTIVITY_DATE"]),
        "DATE_REGISTER": iso(user["DATE_REGISTER"]),
        "LAST_ACTIVITY_DATE": iso(user["LAST_ACTIVITY_DATE"]),
        "IS_ONLINE": user["IS_ONLINE"],
        "TIME_ZONE": user["TIME_ZONE"],
        "PERSONAL_GENDER": user["PERSONAL_GENDER"],
        "PERSONAL_PHONE": user["PERSONAL_PHONE"],
        "PERSONAL_MOBILE": user["PERSONAL_MOBILE"],
        "WORK_PHONE": user["WORK_PHONE"],
        "WORK_POSITION": user["WORK_POSITION"],
        "UF_DEPARTMENT": list(user["UF_DEPARTMENT"]),
        "UF_PHONE_INNER": user["UF_PHONE_INNER"],
        "USER_TYPE": user["USER_TYPE"],
    }
    if "user" not in scopes:
        # Reduced user scopes hide contact data; UF_PHONE_INNER stays readable (REFERENCE 5.7).
        for key in ("PERSONAL_PHONE", "PERSONAL_MOBILE", "WORK_PHONE", "LAST_LOGIN"):
            row.pop(key)
        if "user_basic" not in scopes:
            row.pop("EMAIL")
    return row


@rest_method("user.get", USER_SCOPES)
def user_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    flt = dict(param(p, "filter") or {}) if isinstance(param(p, "filter"), dict) else {}
    for key, value in p.items():
        # Old-style calls put filter keys at the top level: user.get?ID=5
        if key.upper() not in _USER_PARAMS and F.split_key(key.upper())[1] in _USER_KINDS:
            flt[key.upper()] = value
    sort_field = str(param(p, "sort") or "ID").upper()
    direction = param(p, "order")
    order = {sort_field: direction if isinstance(direction, str) else "ASC"}
    rows = F.select_rows(ctx.state.users.values(), flt, order, _USER_KINDS.get, F.plain_get)
    page = F.paginate(rows, param(p, "start"))
    page.result = [user_row(u, ctx.auth.scopes) for u in page.result]
    return page


@rest_method("user.current", USER_SCOPES)
def user_current(ctx: Ctx, p: dict[str, Any]) -> Any:
    return user_row(ctx.state.users[ctx.auth.user_id], ctx.auth.scopes)


@rest_method("profile", None)
def profile(ctx: Ctx, p: dict[str, Any]) -> Any:
    user = ctx.state.users[ctx.auth.user_id]
    return {
        "ID": str(user["ID"]),
        "ADMIN": bool(user["ADMIN"]),
        "NAME": user["NAME"],
        "LAST_NAME": user["LAST_NAME"],
        "PERSONAL_GENDER": user["PERSONAL_GENDER"],
        "PERSONAL_PHOTO": "",
        "TIME_ZONE": user["TIME_ZONE"],
        "TIME_ZONE_OFFSET": 3600,
    }


_DEPT_KINDS = {"ID": F.INT, "NAME": F.STR, "PARENT": F.INT, "UF_HEAD": F.INT, "SORT": F.INT}


@rest_method("department.get", "department")
def department_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    flt = {k.upper(): v for k, v in p.items() if k.upper() in _DEPT_KINDS}
    order = {str(param(p, "sort") or "ID").upper(): str(param(p, "order") or "ASC")}
    rows = F.select_rows(ctx.state.departments.values(), flt, order, _DEPT_KINDS.get, F.plain_get)
    page = F.paginate(rows, param(p, "start"))
    result = []
    for d in page.result:
        row: dict[str, Any] = {"ID": str(d["ID"]), "NAME": d["NAME"], "SORT": d["SORT"]}
        if d["PARENT"] is not None:
            row["PARENT"] = str(d["PARENT"])
        if d.get("UF_HEAD"):
            row["UF_HEAD"] = str(d["UF_HEAD"])
        result.append(row)
    page.result = result
    return page


@rest_method("timeman.status", "timeman")
def timeman_status(ctx: Ctx, p: dict[str, Any]) -> Any:
    uid = to_int(param(p, "USER_ID"), ctx.auth.user_id)
    user = ctx.state.users.get(uid or 0)
    if user is None:
        raise RestError("User not found")
    status = user["TIMEMAN_STATUS"]
    today = datetime.now(PORTAL_TZ)
    day_start = today.replace(hour=9, minute=0, second=0, microsecond=0).timestamp()
    opened = status in ("OPENED", "PAUSED")
    return {
        "STATUS": status,
        "TIME_START": iso(day_start if opened else day_start - 86400),
        "TIME_FINISH": None if opened else iso(day_start - 86400 + 8 * 3600),
        "DURATION": "00:00:00" if opened else "08:00:00",
        "TIME_LEAKS": "00:00:00",
        "ACTIVE": status == "OPENED",
        "IP_OPEN": "",
        "IP_CLOSE": "",
        "TZ_OFFSET": 3600,
    }


# --------------------------------------------------------------------------------------------
# Tasks (REFERENCE 5.3)

_TASK_KINDS: dict[str, str] = {
    "ID": F.INT,
    "TITLE": F.STR,
    "RESPONSIBLE_ID": F.INT,
    "CREATED_BY": F.INT,
    "STATUS": F.INT,
    "REAL_STATUS": F.INT,
    "PRIORITY": F.INT,
    "GROUP_ID": F.INT,
    "DEADLINE": F.DT,
    "CREATED_DATE": F.DT,
    "CHANGED_DATE": F.DT,
    "CLOSED_DATE": F.DT,
    "UF_CRM_TASK": F.STRS,
}


def _snake(key: str) -> str:
    """Task fields arrive as TITLE or title/responsibleId; store them as UPPER_SNAKE."""
    if key.isupper() or "_" in key:
        return key.upper()
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).upper()


def _camel(key: str) -> str:
    parts = key.lower().split("_")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def _user_brief(ctx: Ctx, uid: int | None) -> dict[str, Any]:
    user = ctx.state.users.get(uid or 0) or {}
    name = " ".join(x for x in (user.get("NAME"), user.get("LAST_NAME")) if x)
    return {
        "id": str(uid) if uid else None,
        "name": name,
        "link": f"/company/personal/user/{uid}/",
        "icon": "/bitrix/images/tasks/default_avatar.png",
        "workPosition": user.get("WORK_POSITION", ""),
    }


def task_row(ctx: Ctx, task: dict[str, Any], select: list[str] | None = None) -> dict[str, Any]:
    def s(v: Any) -> str | None:
        return None if v is None else str(v)

    row: dict[str, Any] = {
        "id": s(task["ID"]),
        "parentId": s(task.get("PARENT_ID")),
        "title": task["TITLE"],
        "description": task["DESCRIPTION"],
        "mark": None,
        "priority": s(task["PRIORITY"]),
        "multitask": "N",
        "notViewed": "N",
        "replicate": "N",
        "stageId": "0",
        "createdBy": s(task["CREATED_BY"]),
        "createdDate": iso(task["CREATED_DATE"]),
        "responsibleId": s(task["RESPONSIBLE_ID"]),
        "changedBy": s(task["CHANGED_BY"]),
        "changedDate": iso(task["CHANGED_DATE"]),
        "statusChangedBy": s(task["CHANGED_BY"]),
        "closedBy": s(task.get("CLOSED_BY")),
        "closedDate": iso(task.get("CLOSED_DATE")) or None,
        "activityDate": iso(task["CHANGED_DATE"]),
        "dateStart": None,
        "deadline": iso(task.get("DEADLINE")) or None,
        "startDatePlan": None,
        "endDatePlan": None,
        "guid": task["GUID"],
        "xmlId": None,
        "commentsCount": None,
        "allowChangeDeadline": "Y",
        "allowTimeTracking": "N",
        "taskControl": "N",
        "addInReport": "N",
        "groupId": s(task.get("GROUP_ID") or 0),
        "status": s(task["STATUS"]),
        "subStatus": s(task["STATUS"]),
        "favorite": "N",
        "auditors": [str(a) for a in task.get("AUDITORS", [])],
        "accomplices": [str(a) for a in task.get("ACCOMPLICES", [])],
        "tags": [],
        "creator": _user_brief(ctx, task["CREATED_BY"]),
        "responsible": _user_brief(ctx, task["RESPONSIBLE_ID"]),
    }
    wanted = [str(x).upper() for x in select or []]
    # ufCrmTask is only returned when selected (REFERENCE 5.3).
    if any(w in ("UF_CRM_TASK", "UF_*") for w in wanted):
        row["ufCrmTask"] = list(task.get("UF_CRM_TASK") or [])
    if wanted and "*" not in wanted:
        keep = {_camel(w) for w in wanted} | {"id", "ufCrmTask"}
        row = {k: v for k, v in row.items() if k in keep}
    return row


def _task_fields(p: dict[str, Any]) -> dict[str, Any]:
    data = p.get("fields")
    if not isinstance(data, dict):
        raise RestError("Could not find value for parameter {fields}", "100")
    return {_snake(str(k)): v for k, v in data.items()}


def _check_responsible(ctx: Ctx, value: Any) -> int:
    uid = to_int(value)
    if not uid:
        raise RestError("Responsible person not specified", "ERROR_CORE")
    if uid not in ctx.state.users:
        raise RestError('User specified in the "Responsible" field not found', "ERROR_CORE")
    return uid


def _apply_task(ctx: Ctx, task: dict[str, Any], data: dict[str, Any]) -> None:
    for key in ("TITLE", "DESCRIPTION"):
        if key in data:
            task[key] = str(data[key] or "")
    if "PRIORITY" in data:
        task["PRIORITY"] = to_int(data["PRIORITY"], 1)
    if "DEADLINE" in data:
        task["DEADLINE"] = parse_datetime(data["DEADLINE"])
    if "UF_CRM_TASK" in data:
        task["UF_CRM_TASK"] = [str(x) for x in as_list(data["UF_CRM_TASK"]) if x not in (None, "")]
    for key in ("AUDITORS", "ACCOMPLICES"):
        if key in data:
            task[key] = [i for i in (to_int(x) for x in as_list(data[key])) if i]
    if "GROUP_ID" in data:
        task["GROUP_ID"] = to_int(data["GROUP_ID"], 0)
    if "STATUS" in data and to_int(data["STATUS"]) in (1, 2, 3, 4, 5, 6, 7):
        task["STATUS"] = to_int(data["STATUS"])


def _get_task(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    raw = p.get("taskId", p.get("TASKID", p.get("id")))
    if raw is None:
        raise RestError("Could not find value for parameter {taskId}", "100")
    task = ctx.state.tasks.get(to_int(raw) or 0)
    if task is None:
        raise RestError("Task not found", "ERROR_CORE")
    return task


@rest_method("tasks.task.add", "task")
def tasks_task_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    data = _task_fields(p)
    if not str(data.get("TITLE") or "").strip():
        raise RestError("Task title is not specified<br>", "ERROR_CORE")
    responsible = _check_responsible(ctx, data.get("RESPONSIBLE_ID"))
    ts = now()
    tid = ctx.state.next_id("task")
    task: dict[str, Any] = {
        "ID": tid,
        "PARENT_ID": to_int(data.get("PARENT_ID")),
        "TITLE": "",
        "DESCRIPTION": "",
        "PRIORITY": 1,
        "STATUS": 2,
        "RESPONSIBLE_ID": responsible,
        "CREATED_BY": to_int(data.get("CREATED_BY"), ctx.auth.user_id),
        "CREATED_DATE": ts,
        "CHANGED_BY": ctx.auth.user_id,
        "CHANGED_DATE": ts,
        "CLOSED_BY": None,
        "CLOSED_DATE": None,
        "DEADLINE": None,
        "GROUP_ID": 0,
        "UF_CRM_TASK": [],
        "AUDITORS": [],
        "ACCOMPLICES": [],
        "GUID": "{" + str(uuid.uuid4()).upper() + "}",
    }
    _apply_task(ctx, task, data)
    ctx.state.tasks[tid] = task
    return {"task": task_row(ctx, task)}


@rest_method("tasks.task.get", "task")
def tasks_task_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    return {"task": task_row(ctx, _get_task(ctx, p), as_list(param(p, "select")))}


@rest_method("tasks.task.list", "task")
def tasks_task_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    raw_filter = param(p, "filter") or {}
    flt = {}
    if isinstance(raw_filter, dict):
        for key, value in raw_filter.items():
            op, name = F.split_key(str(key))
            flt[("" if op == "=" and not str(key).startswith("=") else op) + _snake(name)] = value
    raw_order = param(p, "order")
    order = (
        {_snake(str(k)): v for k, v in raw_order.items()} if isinstance(raw_order, dict) else None
    )
    rows = F.select_rows(ctx.state.tasks.values(), flt, order, _TASK_KINDS.get, F.plain_get)
    page = F.paginate(rows, param(p, "start"))
    select = as_list(param(p, "select"))
    page.result = {"tasks": [task_row(ctx, t, select) for t in page.result]}
    return page


@rest_method("tasks.task.update", "task")
def tasks_task_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    task = _get_task(ctx, p)
    data = _task_fields(p)
    if "TITLE" in data and not str(data["TITLE"] or "").strip():
        raise RestError("Task title is not specified<br>", "ERROR_CORE")
    if "RESPONSIBLE_ID" in data:
        task["RESPONSIBLE_ID"] = _check_responsible(ctx, data["RESPONSIBLE_ID"])
    _apply_task(ctx, task, data)
    task["CHANGED_BY"] = ctx.auth.user_id
    task["CHANGED_DATE"] = now()
    return {"task": task_row(ctx, task)}


@rest_method("tasks.task.complete", "task")
def tasks_task_complete(ctx: Ctx, p: dict[str, Any]) -> Any:
    task = _get_task(ctx, p)
    ts = now()
    task.update(STATUS=5, CLOSED_BY=ctx.auth.user_id, CLOSED_DATE=ts, CHANGED_DATE=ts)
    task["CHANGED_BY"] = ctx.auth.user_id
    return {"task": task_row(ctx, task)}


@rest_method("task.commentitem.add", "task")
def task_commentitem_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    """A comment on a task. The old task.* methods read their parameters by position, not by
    name (b24restdocs: "the order of parameters in the request must be followed"): the first
    is the task id, the second the comment's fields."""
    values = [v for k, v in p.items() if str(k).lower() != "auth"]
    task_id = to_int(values[0]) if values else None
    if task_id is None:
        raise RestError(
            "TASKS_ERROR_EXCEPTION_#256; Param #0 (taskId) for method ctaskcommentitem::add() "
            'expected to be of type "integer", but given something else.; 256/TE/WRONG_ARGUMENTS',
            "ERROR_CORE",
        )
    fields = upper_keys(values[1] if len(values) > 1 else None)
    task = ctx.state.tasks.get(task_id)
    if task is None:
        raise RestError("Insufficient permissions to add a comment.<br>", "ERROR_CORE")
    text = str(fields.get("POST_MESSAGE") or "")
    if not text.strip():
        raise RestError("Comment text not specified<br>", "ERROR_CORE")
    comment_id = ctx.state.next_id("task_comment")
    ctx.state.task_comments[comment_id] = {
        "ID": comment_id,
        "TASK_ID": task_id,
        "AUTHOR_ID": to_int(fields.get("AUTHOR_ID"), ctx.auth.user_id),
        "POST_MESSAGE": text,
        "POST_DATE": parse_datetime(fields.get("POST_DATE")) or now(),
    }
    task["CHANGED_DATE"] = now()
    return comment_id


# --------------------------------------------------------------------------------------------
# Notifications (REFERENCE 5.4)


def _notify(ctx: Ctx, p: dict[str, Any], kind: str) -> Any:
    up = upper_keys(p)
    uid = to_int(up.get("USER_ID"))
    if not uid:
        raise RestError("User ID can't be empty", "USER_ID_EMPTY")
    message = str(up.get("MESSAGE") or "")
    if not message.strip():
        raise RestError("Message can't be empty", "MESSAGE_EMPTY")
    attach = up.get("ATTACH")
    if attach is not None and len(json.dumps(attach, ensure_ascii=False)) > 60000:
        raise RestError("You have exceeded the maximum allowable size of attach", "ATTACH_OVERSIZE")
    if ctx.state.active_user(uid) is None:
        return False
    tag = up.get("TAG")
    if tag:
        # A notification with the same tag replaces the earlier one.
        for nid in [n["ID"] for n in ctx.state.notifications.values() if n["TAG"] == tag]:
            del ctx.state.notifications[nid]
    nid = ctx.state.next_id("notification")
    ctx.state.notifications[nid] = {
        "ID": nid,
        "TYPE": kind,
        "USER_ID": uid,
        "AUTHOR_ID": ctx.auth.user_id if kind == "personal" else 0,
        "MESSAGE": message,
        "MESSAGE_OUT": up.get("MESSAGE_OUT"),
        "TAG": tag,
        "SUB_TAG": up.get("SUB_TAG"),
        "CLIENT_ID": up.get("CLIENT_ID"),
        "ATTACH": attach,
        "DATE": now(),
    }
    return nid


@rest_method("im.notify.system.add", "im")
def im_notify_system_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _notify(ctx, p, "system")


@rest_method("im.notify.personal.add", "im")
def im_notify_personal_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _notify(ctx, p, "personal")


# --------------------------------------------------------------------------------------------
# Introspection


@rest_method("scope", None)
def scope(ctx: Ctx, p: dict[str, Any]) -> Any:
    if to_bool(param(p, "full")):
        return list(ALL_SCOPES)
    return list(ctx.auth.scopes)


def _available(ctx: Ctx, name: str) -> bool:
    spec = METHODS[name]
    return not spec.scopes or bool(set(spec.scopes) & set(ctx.auth.scopes))


@rest_method("methods", None)
def methods(ctx: Ctx, p: dict[str, Any]) -> Any:
    wanted_scope = param(p, "scope")
    full = to_bool(param(p, "full"))
    names = sorted(METHODS)
    if wanted_scope:
        return [n for n in names if wanted_scope in METHODS[n].scopes]
    return names if full else [n for n in names if _available(ctx, n)]


@rest_method("method.get", None)
def method_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    name = str(param(p, "name") or "").lower()
    exists = name in METHODS
    return {"isExisting": exists, "isAvailable": exists and _available(ctx, name)}


@rest_method("app.info", None)
def app_info(ctx: Ctx, p: dict[str, Any]) -> Any:
    license_info = {"LICENSE": "pl_project", "LICENSE_TYPE": "project", "LICENSE_FAMILY": "project"}
    if ctx.auth.mode == "webhook":
        return {"SCOPE": list(ctx.auth.scopes), **license_info}
    app = ctx.state.apps[ctx.auth.client_id or ""]
    return {
        "ID": app["APP_ID"],
        "CODE": app["CLIENT_ID"],
        "VERSION": 1,
        "STATUS": "L",
        "INSTALLED": True,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": "en",
        **license_info,
    }


@rest_method("server.time", None)
def server_time(ctx: Ctx, p: dict[str, Any]) -> Any:
    return iso(now())


# --------------------------------------------------------------------------------------------
# batch (REFERENCE 1.6)

BATCH_LIMIT = 50
_REF = re.compile(r"\$(result|error|total|next|time)\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _resolve(match: re.Match[str], sources: dict[str, dict[Any, Any]]) -> Any:
    source = sources[match.group(1)]
    key: Any = match.group(2)
    if key not in source and to_int(key) in source:
        key = to_int(key)
    value: Any = source.get(key)
    for part in re.findall(r"\[([^\]]*)\]", match.group(3)):
        index = to_int(part)
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and index is not None and 0 <= index < len(value):
            value = value[index]
        else:
            value = None
    return value


def _php_string(value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    return str(value)


def _substitute(value: Any, sources: dict[str, dict[Any, Any]]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, sources) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, sources) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        resolved = _resolve(whole, sources)
        return resolved if isinstance(resolved, (list, dict)) else _php_string(resolved)
    return _REF.sub(lambda m: _php_string(_resolve(m, sources)), value)


@rest_method("batch", None, batchable=False)
def batch(ctx: Ctx, p: dict[str, Any]) -> Any:
    cmd = param(p, "cmd")
    halt = bool(to_bool(param(p, "halt")))
    if isinstance(cmd, dict):
        items = list(cmd.items())
    elif isinstance(cmd, list):
        items = list(enumerate(cmd))
    else:
        items = []
    if len(items) > BATCH_LIMIT:
        raise RestError("Max batch length exceeded", "ERROR_BATCH_LENGTH_EXCEEDED")
    results: dict[Any, Any] = {}
    errors: dict[Any, Any] = {}
    totals: dict[Any, Any] = {}
    nexts: dict[Any, Any] = {}
    times: dict[Any, Any] = {}
    sources = {"result": results, "error": errors, "total": totals, "next": nexts, "time": times}
    for key, command in items:
        method, _, query = str(command).partition("?")
        method = method.strip().lower()
        if method.endswith(".json"):
            method = method[: -len(".json")]
        params = _substitute(parse_php_query(query), sources)
        sub_id = ctx.state.new_request_id()
        started = time.time()
        out = execute(
            ctx.state,
            ctx.auth,
            method,
            params,
            request_id=sub_id,
            base_url=ctx.base_url,
            in_batch=True,
            started=started,
        )
        record_call(
            ctx.state,
            request_id=sub_id,
            started=started,
            method=method,
            auth=ctx.auth,
            params=params,
            status=out.status,
            error=None if out.error is None else str(out.error.get("error")),
            batch_id=ctx.request_id,
            extra={"batch_key": key},
        )
        if out.error is None:
            results[key] = out.result
            if out.total is not None:
                totals[key] = out.total
            if out.next is not None:
                nexts[key] = out.next
            times[key] = out.time
        else:
            errors[key] = {
                "error": out.error.get("error"),
                "error_description": out.error.get("error_description"),
            }
            if halt:
                break
    return {
        "result": php_array(results),
        "result_error": php_array(errors),
        "result_total": php_array(totals),
        "result_next": php_array(nexts),
        "result_time": php_array(times),
    }
