"""CRM methods: legacy entity CRUD, crm.item.*, duplicate search, statuses and pipelines."""

from __future__ import annotations

import re
from typing import Any

from . import crm_store as S
from . import events
from . import filters as F
from .core import (
    Ctx,
    Page,
    RestError,
    as_list,
    iso,
    param,
    php_array,
    rest_method,
    to_int,
    upper_keys,
)
from .phone import normalize_phone

LEGACY = {"contact": "CONTACT", "company": "COMPANY", "lead": "LEAD", "deal": "DEAL"}


def require_array(p: dict[str, Any], name: str, *, optional: bool = False) -> dict[str, Any]:
    value = param(p, name)
    if value is None and optional:
        return {}
    if value == [] and optional:
        return {}
    if not isinstance(value, dict):
        raise RestError(f"Parameter '{name}' must be array.")
    return value


def require_id(p: dict[str, Any]) -> int:
    eid = to_int(param(p, "id"))
    if eid is None or eid <= 0:
        raise RestError("ID is not defined or invalid.")
    return eid


def _get_record(ctx: Ctx, etype: str, eid: int) -> dict[str, Any]:
    rec = ctx.state.entities[etype].get(eid)
    if rec is None:
        raise RestError("Not found")
    return rec


def _legacy_list(ctx: Ctx, etype: str, p: dict[str, Any]) -> Page:
    flt = param(p, "filter") or {}
    if not isinstance(flt, dict):
        raise RestError("Parameter 'filter' must be array.")
    select = param(p, "select")
    state = ctx.state
    rows = F.select_rows(
        state.entities[etype].values(),
        flt,
        param(p, "order"),
        lambda name: S.field_kind(state, etype, name),
        S.record_get,
    )
    page = F.paginate(rows, param(p, "start"))
    ufs = state.uf_fields.get(etype, {})
    page.result = [S.legacy_row(etype, r, select or ["*"], ufs) for r in page.result]
    return page


def _register_legacy(prefix: str, etype: str) -> None:
    base = f"crm.{prefix}"

    @rest_method(f"{base}.fields", "crm")
    def fields(ctx: Ctx, p: dict[str, Any]) -> Any:
        return S.describe_fields(ctx.state, etype)

    @rest_method(f"{base}.get", "crm")
    def get(ctx: Ctx, p: dict[str, Any]) -> Any:
        rec = _get_record(ctx, etype, require_id(p))
        return S.legacy_row(etype, rec, None, ctx.state.uf_fields.get(etype, {}))

    @rest_method(f"{base}.list", "crm")
    def list_(ctx: Ctx, p: dict[str, Any]) -> Any:
        return _legacy_list(ctx, etype, p)

    @rest_method(f"{base}.add", "crm")
    def add(ctx: Ctx, p: dict[str, Any]) -> Any:
        data = require_array(p, "fields")
        if etype == "COMPANY" and not str(upper_keys(data).get("TITLE") or "").strip():
            raise RestError('The field "Company name" is required.')
        eid = S.add_entity(ctx.state, etype, data, ctx.auth.user_id)
        events.fire_crm(ctx.state, etype, "ADD", eid)
        return eid

    @rest_method(f"{base}.update", "crm")
    def update(ctx: Ctx, p: dict[str, Any]) -> Any:
        eid = require_id(p)
        _get_record(ctx, etype, eid)
        S.update_entity(ctx.state, etype, eid, require_array(p, "fields"), ctx.auth.user_id)
        events.fire_crm(ctx.state, etype, "UPDATE", eid)
        return True

    @rest_method(f"{base}.delete", "crm")
    def delete(ctx: Ctx, p: dict[str, Any]) -> Any:
        eid = require_id(p)
        _get_record(ctx, etype, eid)
        del ctx.state.entities[etype][eid]
        events.fire_crm(ctx.state, etype, "DELETE", eid)
        return True


for _prefix, _etype in LEGACY.items():
    _register_legacy(_prefix, _etype)


# --------------------------------------------------------------------------------------------
# crm.item.* (universal API) for leads, deals, contacts and companies


def _item_type(p: dict[str, Any]) -> str:
    raw = p.get("entityTypeId", p.get("ENTITY_TYPE_ID", p.get("entitytypeid")))
    if raw is None:
        raise RestError("Could not find value for parameter {entityTypeId}", "100")
    type_id = to_int(raw)
    if type_id in S.ENTITY_TYPE_NAMES:
        return S.ENTITY_TYPE_NAMES[type_id]
    if type_id is not None and type_id >= 128:
        raise RestError("Smart process not found", "NOT_FOUND")
    raise RestError(
        f"Entity type {raw} is not supported by the sandbox", "ENTITY_TYPE_NOT_SUPPORTED"
    )


def _item_get_record(ctx: Ctx, etype: str, p: dict[str, Any]) -> dict[str, Any]:
    eid = to_int(p.get("id", p.get("ID")))
    if eid is None:
        raise RestError("Could not find value for parameter {id}", "100")
    rec = ctx.state.entities[etype].get(eid)
    if rec is None:
        raise RestError("Element not found", "NOT_FOUND")
    return rec


@rest_method("crm.item.get", "crm")
def crm_item_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    etype = _item_type(p)
    return {"item": S.item_row(etype, _item_get_record(ctx, etype, p), ["*"])}


@rest_method("crm.item.list", "crm")
def crm_item_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    etype = _item_type(p)
    state = ctx.state
    mapping = S.uncamel_map(state, etype)

    def kind_of(name: str) -> str | None:
        legacy = mapping.get(name) or ("ID" if name == "id" else None)
        return S.field_kind(state, etype, legacy) if legacy else None

    def get(rec: dict[str, Any], name: str) -> Any:
        return S.record_get(rec, mapping.get(name) or "ID")

    rows = F.select_rows(
        state.entities[etype].values(),
        p.get("filter") or {},
        p.get("order"),
        kind_of,
        get,
        default_order=[("id", False)],
    )
    page = F.paginate(rows, p.get("start"))
    select = p.get("select") or ["*"]
    page.result = {"items": [S.item_row(etype, r, select) for r in page.result]}
    return page


@rest_method("crm.item.add", "crm")
def crm_item_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    etype = _item_type(p)
    data = p.get("fields")
    if not isinstance(data, dict):
        raise RestError("Could not find value for parameter {fields}", "100")
    legacy = S.item_fields_to_legacy(ctx.state, etype, data)
    eid = S.add_entity(ctx.state, etype, legacy, ctx.auth.user_id)
    events.fire_crm(ctx.state, etype, "ADD", eid)
    return {"item": S.item_row(etype, ctx.state.entities[etype][eid], ["*"])}


@rest_method("crm.item.update", "crm")
def crm_item_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    etype = _item_type(p)
    rec = _item_get_record(ctx, etype, p)
    data = p.get("fields")
    if not isinstance(data, dict):
        raise RestError("Could not find value for parameter {fields}", "100")
    legacy = S.item_fields_to_legacy(ctx.state, etype, data)
    S.update_entity(ctx.state, etype, rec["ID"], legacy, ctx.auth.user_id)
    events.fire_crm(ctx.state, etype, "UPDATE", rec["ID"])
    return {"item": S.item_row(etype, rec, ["*"])}


@rest_method("crm.item.fields", "crm")
def crm_item_fields(ctx: Ctx, p: dict[str, Any]) -> Any:
    etype = _item_type(p)
    desc = S.describe_fields(ctx.state, etype)
    return {"fields": {S.camel(k, etype): v for k, v in desc.items()}}


# --------------------------------------------------------------------------------------------
# Duplicate search (REFERENCE 3.1)

DUPLICATE_TYPES = ("LEAD", "CONTACT", "COMPANY")
DUPLICATE_LIMIT = 20


@rest_method("crm.duplicate.findbycomm", "crm")
def crm_duplicate_findbycomm(ctx: Ctx, p: dict[str, Any]) -> Any:
    up = upper_keys(p)
    comm_type = str(up.get("TYPE") or "").upper()
    if not comm_type:
        raise RestError("Communication type is not defined.")
    if comm_type not in ("PHONE", "EMAIL"):
        raise RestError(
            f"Communication type '{up.get('TYPE')}' is not supported in current context."
        )
    entity_type = str(up.get("ENTITY_TYPE") or "").upper()
    if entity_type == "DEAL":
        raise RestError("Deal is not supported in current context.")
    if entity_type and entity_type not in DUPLICATE_TYPES:
        raise RestError(
            f"Entity type '{up.get('ENTITY_TYPE')}' is not supported in current context."
        )
    raw_values = up.get("VALUES")
    values = as_list(raw_values) if isinstance(raw_values, (list, dict)) else []
    values = [v for v in values if isinstance(v, str) and v != ""][:DUPLICATE_LIMIT]
    if not values:
        raise RestError("Communication values is not defined.")
    types = [entity_type] if entity_type else list(DUPLICATE_TYPES)
    result: dict[str, list[int]] = {}
    for etype in types:
        if comm_type == "PHONE":
            codes = {n for n in (normalize_phone(v) for v in values) if n}
            ids = S.find_by_phone(ctx.state, etype, codes)
        else:
            ids = S.find_by_email(ctx.state, etype, {v.strip().lower() for v in values})
        ids = ids[:DUPLICATE_LIMIT]
        if len(ids) >= DUPLICATE_LIMIT:
            # The search stops at the limit and reports only this type (REFERENCE 3.1).
            return {etype: ids}
        if ids:
            result[etype] = ids
    return php_array(result)


# --------------------------------------------------------------------------------------------
# Statuses, pipelines, stages (REFERENCE 3.6)

_SEMANTIC_NAMES = {None: "process", "S": "success", "F": "failure"}
_STAGE_LIKE = re.compile(r"^(STATUS|DEAL_STAGE(_\d+)?)$")


def _status_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": str(row["ID"]),
        "ENTITY_ID": row["ENTITY_ID"],
        "STATUS_ID": row["STATUS_ID"],
        "NAME": row["NAME"],
        "NAME_INIT": row["NAME_INIT"],
        "SORT": str(row["SORT"]),
        "SYSTEM": row["SYSTEM"],
        "CATEGORY_ID": None if row["CATEGORY_ID"] is None else str(row["CATEGORY_ID"]),
        "COLOR": row["COLOR"] or None,
        "SEMANTICS": row["SEMANTICS"],
    }
    if _STAGE_LIKE.match(row["ENTITY_ID"]):
        out["EXTRA"] = {"SEMANTICS": _SEMANTIC_NAMES[row["SEMANTICS"]], "COLOR": row["COLOR"]}
    return out


_STATUS_KINDS = {
    "ID": F.INT,
    "ENTITY_ID": F.STR,
    "STATUS_ID": F.STR,
    "NAME": F.STR,
    "SORT": F.INT,
    "SYSTEM": F.CHAR,
    "CATEGORY_ID": F.INT,
    "SEMANTICS": F.STR,
}


@rest_method("crm.status.list", "crm")
def crm_status_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    rows = F.select_rows(
        ctx.state.statuses,
        param(p, "filter") or {},
        param(p, "order"),
        _STATUS_KINDS.get,
        F.plain_get,
        default_order=[("SORT", False), ("ID", False)],
    )
    # crm.status.list is not paged in practice: it returns the whole directory.
    return Page([_status_row(r) for r in rows], total=len(rows))


@rest_method("crm.status.entity.items", "crm")
def crm_status_entity_items(ctx: Ctx, p: dict[str, Any]) -> Any:
    entity_id = str(param(p, "entityId") or param(p, "ENTITY_ID") or "")
    rows = sorted(
        (r for r in ctx.state.statuses if r["ENTITY_ID"] == entity_id),
        key=lambda r: (r["SORT"], r["ID"]),
    )
    return [{"NAME": r["NAME"], "SORT": r["SORT"], "STATUS_ID": r["STATUS_ID"]} for r in rows]


@rest_method("crm.status.entity.types", "crm")
def crm_status_entity_types(ctx: Ctx, p: dict[str, Any]) -> Any:
    semantic_info = {
        "START_FIELD": "NEW",
        "FINAL_SUCCESS_FIELD": "WON",
        "FINAL_UNSUCCESS_FIELD": "LOSE",
        "FINAL_SORT": 0,
    }
    result: list[dict[str, Any]] = [
        {
            "ID": "STATUS",
            "NAME": "Lead statuses",
            "SEMANTIC_INFO": {**semantic_info, "FINAL_SUCCESS_FIELD": "CONVERTED",
                              "FINAL_UNSUCCESS_FIELD": "JUNK"},
            "ENTITY_TYPE_ID": 1,
        },
        {"ID": "SOURCE", "NAME": "Sources"},
        {"ID": "CONTACT_TYPE", "NAME": "Contact type"},
        {"ID": "COMPANY_TYPE", "NAME": "Company type"},
        {"ID": "DEAL_TYPE", "NAME": "Deal type"},
    ]  # fmt: skip
    for cat in sorted(ctx.state.categories.values(), key=lambda c: c["ID"]):
        cid = cat["ID"]
        entry: dict[str, Any] = {
            "ID": S.stage_entity_id(cid),
            "NAME": "Deal stages" if cid == 0 else f'"{cat["NAME"]}" pipeline stages',
            "SEMANTIC_INFO": semantic_info
            if cid == 0
            else {
                k: (f"C{cid}:{v}" if isinstance(v, str) else v) for k, v in semantic_info.items()
            },
            "ENTITY_TYPE_ID": 2,
        }
        if cid:
            entry.update(
                PARENT_ID="DEAL_STAGE",
                PREFIX=f"C{cid}",
                FIELD_ATTRIBUTE_SCOPE=f"category_{cid}",
                CATEGORY_ID=cid,
            )
        result.append(entry)
    return result


def _category_rows(ctx: Ctx) -> list[dict[str, Any]]:
    return sorted(ctx.state.categories.values(), key=lambda c: (c["SORT"], c["ID"]))


@rest_method("crm.category.list", "crm")
def crm_category_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    raw = p.get("entityTypeId", p.get("ENTITY_TYPE_ID"))
    if raw is None:
        raise RestError("Could not find value for parameter {entityTypeId}", "100")
    type_id = to_int(raw)
    if type_id != 2:
        if type_id is not None and type_id >= 128:
            raise RestError("Smart process not found", "NOT_FOUND")
        raise RestError("Entity type does not support categories", "ENTITY_TYPE_NOT_SUPPORTED")
    cats = [
        {
            "id": c["ID"],
            "name": c["NAME"],
            "sort": c["SORT"],
            "entityTypeId": 2,
            "isDefault": c["IS_DEFAULT"],
            "originId": "",
            "originatorId": "",
        }
        for c in _category_rows(ctx)
    ]
    return Page({"categories": cats}, total=len(cats))


@rest_method("crm.dealcategory.list", "crm")
def crm_dealcategory_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    # The deprecated method does not list the default pipeline 0.
    rows = [
        {
            "ID": str(c["ID"]),
            "CREATED_DATE": iso(c["CREATED_DATE"]),
            "NAME": c["NAME"],
            "IS_LOCKED": c["IS_LOCKED"],
            "SORT": str(c["SORT"]),
        }
        for c in _category_rows(ctx)
        if c["ID"] != 0
    ]
    return F.paginate(rows, param(p, "start"))


@rest_method("crm.dealcategory.stage.list", "crm")
def crm_dealcategory_stage_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    cid = to_int(param(p, "id"), 0) or 0
    if cid not in ctx.state.categories:
        raise RestError("Not found")
    return [
        {"NAME": s["NAME"], "SORT": str(s["SORT"]), "STATUS_ID": s["STATUS_ID"]}
        for s in S.stages_of(ctx.state, cid)
    ]


@rest_method("crm.dealcategory.default.get", "crm")
def crm_dealcategory_default_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    c = ctx.state.categories[0]
    return {"ID": 0, "NAME": c["NAME"]}
