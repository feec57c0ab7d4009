"""CRM activities, timeline comments and automation triggers (REFERENCE 5.5, 5.6)."""

from __future__ import annotations

import re
from typing import Any

from . import crm_store as S
from . import filters as F
from .core import (
    Ctx,
    RestError,
    as_list,
    iso,
    now,
    param,
    parse_datetime,
    rest_method,
    to_bool,
    to_int,
    upper_keys,
)
from .methods_crm import require_array, require_id

ACTIVITY_TYPES = {1: "MEETING", 2: "CALL", 3: "TASK", 4: "EMAIL", 5: "ACTION", 6: "PROVIDER"}

_ACTIVITY_KINDS: dict[str, str] = {
    "ID": F.INT,
    "OWNER_ID": F.INT,
    "OWNER_TYPE_ID": F.INT,
    "TYPE_ID": F.INT,
    "PROVIDER_ID": F.STR,
    "PROVIDER_TYPE_ID": F.STR,
    "SUBJECT": F.STR,
    "COMPLETED": F.CHAR,
    "STATUS": F.INT,
    "RESPONSIBLE_ID": F.INT,
    "DIRECTION": F.INT,
    "START_TIME": F.DT,
    "END_TIME": F.DT,
    "DEADLINE": F.DT,
    "CREATED": F.DT,
    "LAST_UPDATED": F.DT,
    "ORIGIN_ID": F.STR,
    "AUTHOR_ID": F.INT,
    "DESCRIPTION": F.STR,
    "PRIORITY": F.INT,
}
_INT_OUT = {
    "ID",
    "OWNER_ID",
    "OWNER_TYPE_ID",
    "TYPE_ID",
    "STATUS",
    "RESPONSIBLE_ID",
    "DIRECTION",
    "AUTHOR_ID",
    "EDITOR_ID",
    "PRIORITY",
    "DESCRIPTION_TYPE",
    "NOTIFY_TYPE",
    "NOTIFY_VALUE",
    "ASSOCIATED_ENTITY_ID",
    "STORAGE_TYPE_ID",
    "RESULT_MARK",
}
_DT_OUT = {"START_TIME", "END_TIME", "DEADLINE", "CREATED", "LAST_UPDATED"}


def create_activity(state: Any, fields: dict[str, Any], user_id: int) -> dict[str, Any]:
    """Store an activity (used by crm.activity.add and telephony finish)."""
    ts = now()
    aid = state.next_id("activity")
    completed = fields.get("COMPLETED", "N")
    act: dict[str, Any] = {
        "ID": aid,
        "OWNER_ID": None,
        "OWNER_TYPE_ID": None,
        "TYPE_ID": 2,
        "PROVIDER_ID": "CRM_CALL",
        "PROVIDER_TYPE_ID": "CALL",
        "PROVIDER_GROUP_ID": None,
        "ASSOCIATED_ENTITY_ID": None,
        "SUBJECT": "",
        "CREATED": ts,
        "LAST_UPDATED": ts,
        "START_TIME": ts,
        "END_TIME": ts,
        "DEADLINE": ts,
        "COMPLETED": completed,
        "STATUS": 2 if completed == "Y" else 1,
        "RESPONSIBLE_ID": user_id,
        "PRIORITY": 2,
        "NOTIFY_TYPE": 0,
        "NOTIFY_VALUE": 0,
        "DESCRIPTION": "",
        "DESCRIPTION_TYPE": 1,
        "DIRECTION": 0,
        "LOCATION": "",
        "SETTINGS": {},
        "ORIGINATOR_ID": None,
        "ORIGIN_ID": None,
        "AUTHOR_ID": user_id,
        "EDITOR_ID": user_id,
        "RESULT_MARK": 0,
        "STORAGE_TYPE_ID": 3,
        "STORAGE_ELEMENT_IDS": [],
        "COMMUNICATIONS": [],
        "BINDINGS": [],
    }
    act.update(fields)
    act["STATUS"] = 2 if act["COMPLETED"] == "Y" else 1
    state.activities[aid] = act
    etype = S.ENTITY_TYPE_NAMES.get(act["OWNER_TYPE_ID"] or 0)
    if etype:
        S.touch_activity(state, etype, act["OWNER_ID"], user_id)
    return act


def activity_row(act: dict[str, Any], base_url: str, with_comms: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in act.items():
        if key in ("COMMUNICATIONS", "BINDINGS", "STORAGE_ELEMENT_IDS"):
            continue
        if key in _INT_OUT:
            out[key] = None if value is None else str(value)
        elif key in _DT_OUT:
            out[key] = iso(value)
        elif key == "SETTINGS":
            out[key] = value or []
        else:
            out[key] = value
    out["STORAGE_ELEMENT_IDS"] = [str(i) for i in act["STORAGE_ELEMENT_IDS"]]
    out["FILES"] = [
        {"id": fid, "url": f"{base_url}/_sandbox/files/{fid}"} for fid in act["STORAGE_ELEMENT_IDS"]
    ]
    if with_comms:
        out["COMMUNICATIONS"] = [
            {
                "ID": str(c.get("ID", "")),
                "TYPE": c.get("TYPE", "PHONE"),
                "VALUE": c.get("VALUE", ""),
                "ENTITY_ID": None if c.get("ENTITY_ID") is None else str(c["ENTITY_ID"]),
                "ENTITY_TYPE_ID": None
                if c.get("ENTITY_TYPE_ID") is None
                else str(c["ENTITY_TYPE_ID"]),
            }
            for c in act["COMMUNICATIONS"]
        ]
    return out


def _owner_exists(ctx: Ctx, type_id: int | None, owner_id: int | None) -> bool:
    etype = S.ENTITY_TYPE_NAMES.get(type_id or 0)
    return bool(etype and owner_id and owner_id in ctx.state.entities[etype])


@rest_method("crm.activity.add", "crm")
def crm_activity_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    data = upper_keys(require_array(p, "fields"))
    owner_type = to_int(data.get("OWNER_TYPE_ID"))
    owner_id = to_int(data.get("OWNER_ID"))
    if not owner_type or owner_type not in S.ENTITY_TYPE_NAMES:
        raise RestError("The field OWNER_TYPE_ID is not defined or invalid.")
    if not owner_id or owner_id <= 0:
        raise RestError("The field OWNER_ID is not defined or invalid.")
    if not _owner_exists(ctx, owner_type, owner_id):
        raise RestError("Access denied.")
    type_id = to_int(data.get("TYPE_ID"))
    if type_id not in ACTIVITY_TYPES:
        raise RestError("The field TYPE_ID is not defined or invalid.")
    subject = str(data.get("SUBJECT") or "").strip()
    if not subject:
        raise RestError("The field SUBJECT is not defined or empty")
    comms: list[dict[str, Any]] = []
    for raw in as_list(data.get("COMMUNICATIONS")):
        if not isinstance(raw, dict):
            continue
        c = upper_keys(raw)
        if not str(c.get("VALUE") or "").strip():
            continue
        comms.append(
            {
                "ID": len(comms) + 1,
                "TYPE": str(c.get("TYPE") or ("PHONE" if type_id == 2 else "EMAIL")).upper(),
                "VALUE": str(c["VALUE"]),
                "ENTITY_ID": to_int(c.get("ENTITY_ID"), owner_id),
                "ENTITY_TYPE_ID": to_int(c.get("ENTITY_TYPE_ID"), owner_type),
            }
        )
    if not comms and type_id in (2, 4):
        raise RestError("The field COMMUNICATIONS is not defined or invalid")
    completed = "Y" if to_bool(data.get("COMPLETED")) else "N"
    start = parse_datetime(data.get("START_TIME")) or now()
    end = parse_datetime(data.get("END_TIME")) or start
    fields = {
        "OWNER_TYPE_ID": owner_type,
        "OWNER_ID": owner_id,
        "TYPE_ID": type_id,
        "PROVIDER_ID": {2: "CRM_CALL", 1: "CRM_MEETING", 4: "CRM_EMAIL"}.get(type_id, "CRM_TODO"),
        "PROVIDER_TYPE_ID": ACTIVITY_TYPES[type_id],
        "SUBJECT": subject,
        "DESCRIPTION": str(data.get("DESCRIPTION") or ""),
        "DESCRIPTION_TYPE": to_int(data.get("DESCRIPTION_TYPE"), 1),
        "DIRECTION": to_int(data.get("DIRECTION"), 0),
        "COMPLETED": completed,
        "RESPONSIBLE_ID": to_int(data.get("RESPONSIBLE_ID"), ctx.auth.user_id),
        "PRIORITY": to_int(data.get("PRIORITY"), 2),
        "START_TIME": start,
        "END_TIME": end,
        "DEADLINE": parse_datetime(data.get("DEADLINE")) or end,
        "ORIGIN_ID": data.get("ORIGIN_ID"),
        "COMMUNICATIONS": comms,
        "BINDINGS": [{"OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id}],
    }
    return create_activity(ctx.state, fields, ctx.auth.user_id)["ID"]


def _get_activity(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    act = ctx.state.activities.get(require_id(p))
    if act is None:
        raise RestError("Not found")
    return act


@rest_method("crm.activity.get", "crm")
def crm_activity_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    return activity_row(_get_activity(ctx, p), ctx.base_url, with_comms=True)


@rest_method("crm.activity.list", "crm")
def crm_activity_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    flt = param(p, "filter") or {}
    rows = F.select_rows(
        ctx.state.activities.values(), flt, param(p, "order"), _ACTIVITY_KINDS.get, F.plain_get
    )
    page = F.paginate(rows, param(p, "start"))
    select = [str(s).upper() for s in as_list(param(p, "select"))]
    result = []
    for act in page.result:
        row = activity_row(act, ctx.base_url, with_comms="COMMUNICATIONS" in select)
        if select and "*" not in select:
            row = {k: v for k, v in row.items() if k in select or k == "ID"}
        result.append(row)
    page.result = result
    return page


@rest_method("crm.activity.update", "crm")
def crm_activity_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    act = _get_activity(ctx, p)
    data = upper_keys(require_array(p, "fields"))
    for key in ("SUBJECT", "DESCRIPTION", "LOCATION"):
        if key in data:
            act[key] = str(data[key] or "")
    for key in ("RESPONSIBLE_ID", "PRIORITY", "DESCRIPTION_TYPE", "DIRECTION"):
        if key in data and to_int(data[key]) is not None:
            act[key] = to_int(data[key])
    for key in ("START_TIME", "END_TIME", "DEADLINE"):
        if key in data and parse_datetime(data[key]) is not None:
            act[key] = parse_datetime(data[key])
    if "COMPLETED" in data:
        act["COMPLETED"] = "Y" if to_bool(data["COMPLETED"]) else "N"
        act["STATUS"] = 2 if act["COMPLETED"] == "Y" else 1
    act["LAST_UPDATED"] = now()
    act["EDITOR_ID"] = ctx.auth.user_id
    return True


@rest_method("crm.activity.delete", "crm")
def crm_activity_delete(ctx: Ctx, p: dict[str, Any]) -> Any:
    act = _get_activity(ctx, p)
    del ctx.state.activities[act["ID"]]
    return True


# --------------------------------------------------------------------------------------------
# Universal activities (to-dos): crm.activity.todo.* (b24restdocs
# api-reference/crm/timeline/activities/todo/). camelCase parameters; a missing one is error 100,
# an owner that does not exist NOT_FOUND, a date that does not parse WRONG_DATETIME_FORMAT, and a
# completed to-do cannot be changed (CAN_NOT_UPDATE_COMPLETED_TODO). Read back with
# crm.activity.get / .list (PROVIDER_ID "CRM_TODO"), completed with crm.activity.update.


def _todo_param(p: dict[str, Any], name: str, *, required: bool = True) -> Any:
    for key, value in p.items():
        if str(key).lower() == name.lower():
            return value
    if required:
        raise RestError(f"Could not find value for parameter {{{name}}}", "100")
    return None


def _todo_owner(ctx: Ctx, p: dict[str, Any]) -> tuple[int, int]:
    owner_type = to_int(_todo_param(p, "ownerTypeId"))
    owner_id = to_int(_todo_param(p, "ownerId"))
    if owner_type is None or owner_id is None or not _owner_exists(ctx, owner_type, owner_id):
        raise RestError("Not found.", "NOT_FOUND")
    return owner_type, owner_id


def _todo_datetime(value: Any) -> float:
    parsed = parse_datetime(value) if isinstance(value, str) and value.strip() else None
    if parsed is None:
        raise RestError("Wrong datetime format", "WRONG_DATETIME_FORMAT")
    return parsed


def _todo_for_update(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    act = ctx.state.activities.get(to_int(_todo_param(p, "id")) or 0)
    owner = _todo_owner(ctx, p)
    if (
        act is None
        or act.get("PROVIDER_ID") != "CRM_TODO"
        or (act["OWNER_TYPE_ID"], act["OWNER_ID"]) != owner
    ):
        raise RestError("Not found.", "NOT_FOUND")
    if act["COMPLETED"] == "Y":
        raise RestError("Can not update completed todo", "CAN_NOT_UPDATE_COMPLETED_TODO")
    return act


@rest_method("crm.activity.todo.add", "crm")
def crm_activity_todo_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    owner_type, owner_id = _todo_owner(ctx, p)
    deadline = _todo_datetime(_todo_param(p, "deadline"))
    responsible = to_int(_todo_param(p, "responsibleId", required=False), ctx.auth.user_id)
    pings = [to_int(v) for v in as_list(_todo_param(p, "pingOffsets", required=False))]
    fields = {
        "OWNER_TYPE_ID": owner_type,
        "OWNER_ID": owner_id,
        "TYPE_ID": 6,
        "PROVIDER_ID": "CRM_TODO",
        "PROVIDER_TYPE_ID": "TODO",
        "SUBJECT": str(_todo_param(p, "title", required=False) or ""),
        "DESCRIPTION": str(_todo_param(p, "description", required=False) or ""),
        "DESCRIPTION_TYPE": 1,
        "COMPLETED": "N",
        "RESPONSIBLE_ID": responsible,
        "START_TIME": now(),
        "END_TIME": deadline,
        "DEADLINE": deadline,
        "PARENT_ID": to_int(_todo_param(p, "parentActivityId", required=False)),
        "PING_OFFSETS": [v for v in pings if v is not None],
        "COLOR_ID": to_int(_todo_param(p, "colorId", required=False)),
        "BINDINGS": [{"OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id}],
    }
    return {"id": create_activity(ctx.state, fields, ctx.auth.user_id)["ID"]}


@rest_method("crm.activity.todo.updateDeadline", "crm")
def crm_activity_todo_update_deadline(ctx: Ctx, p: dict[str, Any]) -> Any:
    act = _todo_for_update(ctx, p)
    act["DEADLINE"] = act["END_TIME"] = _todo_datetime(_todo_param(p, "value"))
    act["LAST_UPDATED"] = now()
    act["EDITOR_ID"] = ctx.auth.user_id
    return {"id": act["ID"]}


@rest_method("crm.activity.todo.updateDescription", "crm")
def crm_activity_todo_update_description(ctx: Ctx, p: dict[str, Any]) -> Any:
    act = _todo_for_update(ctx, p)
    act["DESCRIPTION"] = str(_todo_param(p, "value") or "")
    act["LAST_UPDATED"] = now()
    act["EDITOR_ID"] = ctx.auth.user_id
    return {"id": act["ID"]}


# --------------------------------------------------------------------------------------------
# Timeline comments

_TIMELINE_TYPES = {"lead": "LEAD", "deal": "DEAL", "contact": "CONTACT", "company": "COMPANY"}


@rest_method("crm.timeline.comment.add", "crm")
def crm_timeline_comment_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    # Only lower-case `fields` is read since crm 23.100.0 (REFERENCE 1.1).
    data = p.get("fields")
    if not isinstance(data, dict):
        raise RestError("Could not find value for parameter {fields}", "100")
    entity_type = str(data.get("ENTITY_TYPE") or "")
    entity_id = to_int(data.get("ENTITY_ID"))
    etype = _TIMELINE_TYPES.get(entity_type)
    if re.fullmatch(r"dynamic_\d+", entity_type):
        raise RestError("Owner entity not found", "OWNER_NOT_FOUND")
    if etype is None:
        raise RestError(f"Invalid value of ENTITY_TYPE: '{entity_type}'", "INVALID_ARG_VALUE")
    if not entity_id or entity_id not in ctx.state.entities[etype]:
        raise RestError("Owner entity not found", "OWNER_NOT_FOUND")
    comment = str(data.get("COMMENT") or "")
    if not comment.strip():
        raise RestError("Comment is empty", "INVALID_ARG_VALUE")
    cid = ctx.state.next_id("comment")
    ctx.state.comments[cid] = {
        "ID": cid,
        "CREATED": now(),
        "ENTITY_ID": entity_id,
        "ENTITY_TYPE": entity_type,
        "AUTHOR_ID": ctx.auth.user_id,
        "COMMENT": comment,
        "FILES": [f[0] for f in as_list(data.get("FILES")) if isinstance(f, list) and f],
    }
    S.touch_activity(ctx.state, etype, entity_id, ctx.auth.user_id)
    return cid


@rest_method("crm.timeline.comment.list", "crm")
def crm_timeline_comment_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    kinds = {
        "ID": F.INT,
        "ENTITY_ID": F.INT,
        "ENTITY_TYPE": F.STR,
        "AUTHOR_ID": F.INT,
        "CREATED": F.DT,
    }
    rows = F.select_rows(
        ctx.state.comments.values(), param(p, "filter") or {}, param(p, "order"), kinds.get,
        F.plain_get,
    )  # fmt: skip
    page = F.paginate(rows, param(p, "start"))
    page.result = [
        {
            "ID": str(c["ID"]),
            "CREATED": iso(c["CREATED"]),
            "ENTITY_ID": str(c["ENTITY_ID"]),
            "ENTITY_TYPE": c["ENTITY_TYPE"],
            "AUTHOR_ID": str(c["AUTHOR_ID"]),
            "COMMENT": c["COMMENT"],
        }
        for c in page.result
    ]
    return page


# --------------------------------------------------------------------------------------------
# Automation: "Track incoming webhook" trigger


@rest_method("crm.automation.trigger", "crm")
def crm_automation_trigger(ctx: Ctx, p: dict[str, Any]) -> Any:
    target = param(p, "target")
    if not target:
        raise RestError("Target is not set.")
    m = re.fullmatch(r"(LEAD|DEAL|CONTACT|COMPANY|DYNAMIC_\d+)_(\d+)", str(target).upper())
    if not m:
        raise RestError("Incorrect target format.")
    etype, eid = m.group(1), int(m.group(2))
    if etype not in ctx.state.entities or eid not in ctx.state.entities[etype]:
        raise RestError("Target is not found.")
    ctx.state.triggers.append(
        {
            "TARGET": f"{etype}_{eid}",
            "ENTITY_TYPE": etype,
            "ENTITY_ID": eid,
            "CODE": param(p, "code"),
            "USER_ID": ctx.auth.user_id,
            "AUTH": ctx.auth.mode,
            "TIME": now(),
        }
    )
    return True
