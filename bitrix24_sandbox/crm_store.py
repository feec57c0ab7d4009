"""CRM entity storage: field definitions, writes, legacy (string-typed) and camelCase rendering.

Records are kept with real Python types (ints, floats, timestamps); the legacy ``crm.*.get/list``
renderer turns numbers into strings the way Bitrix24 does (REFERENCE 1.3) while ``crm.item.*``
keeps real ints.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from . import filters as F
from .core import (
    RestError,
    as_list,
    iso,
    now,
    parse_datetime,
    to_bool,
    to_float,
    to_int,
    upper_keys,
)
from .phone import normalize_phone

if TYPE_CHECKING:
    from .state import State

ENTITY_TYPE_IDS = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}
ENTITY_TYPE_NAMES = {v: k for k, v in ENTITY_TYPE_IDS.items()}
SHORT_PREFIX = {"LEAD": "L", "DEAL": "D", "CONTACT": "C", "COMPANY": "CO"}

INT_TYPES = {"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_category"}

# Flags: r = read-only, m = multiple, q = required, i = immutable,
# w = accepted on write / listed in .fields but not rendered by get/list (e.g. CONTACT_IDS).
_COMMON_TAIL = [
    ("OPENED", "char", ""),
    ("COMMENTS", "string", ""),
    ("ASSIGNED_BY_ID", "user", ""),
    ("CREATED_BY_ID", "user", "r"),
    ("MODIFY_BY_ID", "user", "r"),
    ("DATE_CREATE", "datetime", "r"),
    ("DATE_MODIFY", "datetime", "r"),
    ("ORIGINATOR_ID", "string", ""),
    ("ORIGIN_ID", "string", ""),
    ("LAST_ACTIVITY_TIME", "datetime", "r"),
    ("LAST_ACTIVITY_BY", "user", "r"),
]
_COMMS = [
    ("HAS_PHONE", "char", "r"),
    ("HAS_EMAIL", "char", "r"),
    ("HAS_IMOL", "char", "r"),
    ("PHONE", "crm_multifield", "m"),
    ("EMAIL", "crm_multifield", "m"),
]

FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "CONTACT": [
        ("ID", "integer", "r"),
        ("HONORIFIC", "crm_status", ""),
        ("NAME", "string", ""),
        ("SECOND_NAME", "string", ""),
        ("LAST_NAME", "string", ""),
        ("BIRTHDATE", "date", ""),
        ("TYPE_ID", "crm_status", ""),
        ("SOURCE_ID", "crm_status", ""),
        ("SOURCE_DESCRIPTION", "string", ""),
        ("POST", "string", ""),
        ("ADDRESS", "string", ""),
        ("EXPORT", "char", ""),
        ("COMPANY_ID", "crm_company", ""),
        ("COMPANY_IDS", "crm_company", "mw"),
        ("LEAD_ID", "crm_lead", "r"),
        *_COMMON_TAIL,
        *_COMMS,
    ],
    "COMPANY": [
        ("ID", "integer", "r"),
        ("TITLE", "string", "q"),
        ("COMPANY_TYPE", "crm_status", ""),
        ("ADDRESS", "string", ""),
        ("INDUSTRY", "crm_status", ""),
        ("EMPLOYEES", "crm_status", ""),
        ("CURRENCY_ID", "crm_currency", ""),
        ("REVENUE", "double", ""),
        ("IS_MY_COMPANY", "char", ""),
        ("CONTACT_ID", "crm_contact", "mw"),
        ("LEAD_ID", "crm_lead", "r"),
        *_COMMON_TAIL,
        *_COMMS,
    ],
    "LEAD": [
        ("ID", "integer", "r"),
        ("TITLE", "string", ""),
        ("HONORIFIC", "crm_status", ""),
        ("NAME", "string", ""),
        ("SECOND_NAME", "string", ""),
        ("LAST_NAME", "string", ""),
        ("BIRTHDATE", "date", ""),
        ("COMPANY_TITLE", "string", ""),
        ("SOURCE_ID", "crm_status", ""),
        ("SOURCE_DESCRIPTION", "string", ""),
        ("STATUS_ID", "crm_status", ""),
        ("STATUS_DESCRIPTION", "string", ""),
        ("STATUS_SEMANTIC_ID", "string", "r"),
        ("POST", "string", ""),
        ("ADDRESS", "string", ""),
        ("CURRENCY_ID", "crm_currency", ""),
        ("OPPORTUNITY", "double", ""),
        ("IS_MANUAL_OPPORTUNITY", "char", ""),
        ("COMPANY_ID", "crm_company", ""),
        ("CONTACT_ID", "crm_contact", ""),
        ("CONTACT_IDS", "crm_contact", "mw"),
        ("IS_RETURN_CUSTOMER", "char", "r"),
        ("DATE_CLOSED", "datetime", "r"),
        ("MOVED_BY_ID", "user", "r"),
        ("MOVED_TIME", "datetime", "r"),
        *_COMMON_TAIL,
        *_COMMS,
    ],
    "DEAL": [
        ("ID", "integer", "r"),
        ("TITLE", "string", ""),
        ("TYPE_ID", "crm_status", ""),
        ("CATEGORY_ID", "crm_category", "i"),
        ("STAGE_ID", "crm_status", ""),
        ("STAGE_SEMANTIC_ID", "string", "r"),
        ("IS_NEW", "char", "r"),
        ("IS_RECURRING", "char", ""),
        ("IS_RETURN_CUSTOMER", "char", ""),
        ("IS_REPEATED_APPROACH", "char", ""),
        ("PROBABILITY", "integer", ""),
        ("CURRENCY_ID", "crm_currency", ""),
        ("OPPORTUNITY", "double", ""),
        ("IS_MANUAL_OPPORTUNITY", "char", ""),
        ("TAX_VALUE", "double", ""),
        ("COMPANY_ID", "crm_company", ""),
        ("CONTACT_ID", "crm_contact", ""),
        ("CONTACT_IDS", "crm_contact", "mw"),
        ("QUOTE_ID", "integer", "r"),
        ("BEGINDATE", "date", ""),
        ("CLOSEDATE", "date", ""),
        ("CLOSED", "char", ""),
        ("SOURCE_ID", "crm_status", ""),
        ("SOURCE_DESCRIPTION", "string", ""),
        ("LEAD_ID", "crm_lead", ""),
        ("ADDITIONAL_INFO", "string", ""),
        ("MOVED_BY_ID", "user", "r"),
        ("MOVED_TIME", "datetime", "r"),
        *_COMMON_TAIL,
    ],
}
SPECS: dict[str, dict[str, tuple[str, str]]] = {
    et: {name: (ftype, flags) for name, ftype, flags in rows} for et, rows in FIELDS.items()
}
STATUS_TYPES = {
    "TYPE_ID": {"CONTACT": "CONTACT_TYPE", "DEAL": "DEAL_TYPE"},
    "SOURCE_ID": "SOURCE",
    "STATUS_ID": "STATUS",
    "COMPANY_TYPE": "COMPANY_TYPE",
    "STAGE_ID": "DEAL_STAGE",
    "HONORIFIC": "HONORIFIC",
    "INDUSTRY": "INDUSTRY",
    "EMPLOYEES": "EMPLOYEES",
}
# Fields whose legacy "*" select is only what the system keeps; explicit select is needed.
MULTIFIELDS = ("PHONE", "EMAIL")


_KIND_BY_TYPE = {
    "crm_multifield": F.PHONES,
    "double": F.FLOAT,
    "datetime": F.DT,
    "date": F.DT,
    "char": F.CHAR,
    **dict.fromkeys(INT_TYPES, F.INT),
}


def field_kind(state: State, etype: str, name: str) -> str | None:
    spec = SPECS[etype].get(name)
    if spec is None:
        return F.STRS if name.startswith("UF_") else None
    ftype, flags = spec
    kind = _KIND_BY_TYPE.get(ftype, F.STR)
    return F.INTS if kind == F.INT and "m" in flags else kind


def record_get(rec: dict[str, Any], name: str) -> Any:
    value = rec.get(name)
    if name in MULTIFIELDS:
        return [m["VALUE"] for m in value or []]
    return value


# --------------------------------------------------------------------------------------------
# Stages and statuses


def stage_entity_id(category_id: int) -> str:
    return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"


def stages_of(state: State, category_id: int) -> list[dict[str, Any]]:
    eid = stage_entity_id(category_id)
    rows = [s for s in state.statuses if s["ENTITY_ID"] == eid]
    return sorted(rows, key=lambda s: (s["SORT"], s["ID"]))


def status_semantic(state: State, entity_id: str, status_id: Any) -> str:
    for s in state.statuses:
        if s["ENTITY_ID"] == entity_id and s["STATUS_ID"] == status_id:
            return s["SEMANTICS"] or "P"
    return "P"  # a deleted stage keeps the record "in progress"


def status_exists(state: State, entity_id: str, status_id: Any) -> bool:
    return any(s["ENTITY_ID"] == entity_id and s["STATUS_ID"] == status_id for s in state.statuses)


# --------------------------------------------------------------------------------------------
# Writes


def _convert_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if value is None or isinstance(value, (list, dict)):
        return "" if value is None else value
    return str(value)


_CONVERTERS = {
    # Bitrix stores 0 / "" as "not set" for references.
    **dict.fromkeys(INT_TYPES, lambda v: to_int(v) or None),
    "double": lambda v: to_float(v, 0.0),
    "datetime": parse_datetime,
    "date": parse_datetime,
    "char": lambda v: "Y" if to_bool(v) else "N",
}


def _convert(ftype: str, flags: str, value: Any) -> Any:
    if "m" in flags and ftype != "crm_multifield":
        return [_convert(ftype, "", v) for v in as_list(value) if v not in (None, "")]
    return _CONVERTERS.get(ftype, _convert_text)(value)


def _apply_multifield(
    state: State, current: list[dict[str, Any]], incoming: Any, type_id: str
) -> list[dict[str, Any]]:
    result = [dict(m) for m in current]
    for raw in as_list(incoming):
        item = upper_keys(raw if isinstance(raw, dict) else {"VALUE": raw})
        mid = to_int(item.get("ID"))
        value = item.get("VALUE")
        if mid:
            existing = next((m for m in result if m["ID"] == mid), None)
            if existing is None:
                continue
            if value in (None, "") or to_bool(item.get("DELETE")):
                result.remove(existing)
                continue
            existing["VALUE"] = str(value)
            if item.get("VALUE_TYPE"):
                existing["VALUE_TYPE"] = str(item["VALUE_TYPE"]).upper()
            continue
        if value in (None, ""):
            continue
        result.append(
            {
                "ID": state.next_id("multifield"),
                "VALUE_TYPE": str(item.get("VALUE_TYPE") or "WORK").upper(),
                "VALUE": str(value),
                "TYPE_ID": type_id,
            }
        )
    return result


def _apply_fields(
    state: State, etype: str, rec: dict[str, Any], fields: dict[str, Any], creating: bool
) -> None:
    specs = SPECS[etype]
    for key, value in fields.items():
        name = str(key).upper() if not str(key).startswith("UF_") else str(key)
        if name.startswith("UF_"):
            # Arbitrary user fields are accepted and remembered so .fields lists them.
            ufs = state.uf_fields.setdefault(etype, {})
            if name not in ufs:
                ufs[name] = {"type": "string", "label": name, "multiple": isinstance(value, list)}
            rec[name] = value
            continue
        spec = specs.get(name)
        if spec is None:
            continue
        ftype, flags = spec
        if "r" in flags or ("i" in flags and not creating):
            continue
        if ftype == "crm_multifield":
            rec[name] = _apply_multifield(state, rec.get(name) or [], value, name)
        else:
            rec[name] = _convert(ftype, flags, value)


def _sync_ids(rec: dict[str, Any], old: dict[str, Any] | None, single: str, multi: str) -> None:
    """Keep the legacy single reference (CONTACT_ID) and the list (CONTACT_IDS) consistent;
    the list wins when both are sent, the single one is always the first of the list."""
    ids = list(rec.get(multi) or [])
    single_changed = old is None or rec.get(single) != old.get(single)
    multi_changed = old is None or rec.get(multi) != old.get(multi)
    if single_changed and not (multi_changed and ids):
        # The legacy single field replaces the bindings when the list itself was not sent.
        ids = [rec[single]] if rec.get(single) else []
    rec[multi] = ids
    rec[single] = ids[0] if ids else None


def _derive(state: State, etype: str, rec: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Recompute fields Bitrix24 derives from others."""
    if "PHONE" in SPECS[etype]:
        rec["HAS_PHONE"] = "Y" if rec.get("PHONE") else "N"
        rec["HAS_EMAIL"] = "Y" if rec.get("EMAIL") else "N"
        rec.setdefault("HAS_IMOL", "N")
    if etype == "DEAL":
        _sync_ids(rec, old, "CONTACT_ID", "CONTACT_IDS")
        sem = status_semantic(state, stage_entity_id(rec["CATEGORY_ID"]), rec["STAGE_ID"])
        rec["STAGE_SEMANTIC_ID"] = sem
        rec["CLOSED"] = "N" if sem == "P" else "Y"
    if etype == "LEAD":
        _sync_ids(rec, old, "CONTACT_ID", "CONTACT_IDS")
        rec["STATUS_SEMANTIC_ID"] = status_semantic(state, "STATUS", rec["STATUS_ID"])
        rec["IS_RETURN_CUSTOMER"] = "Y" if rec.get("CONTACT_ID") or rec.get("COMPANY_ID") else "N"
    if etype == "CONTACT":
        _sync_ids(rec, old, "COMPANY_ID", "COMPANY_IDS")


def _validate_stage(state: State, etype: str, rec: dict[str, Any]) -> None:
    if etype == "DEAL":
        cat = rec["CATEGORY_ID"]
        if cat not in state.categories:
            raise RestError(f"Category with ID '{cat}' is not found.")
        if not rec.get("STAGE_ID"):
            stages = stages_of(state, cat)
            rec["STAGE_ID"] = stages[0]["STATUS_ID"] if stages else "NEW"
        elif not status_exists(state, stage_entity_id(cat), rec["STAGE_ID"]):
            raise RestError(f"Stage '{rec['STAGE_ID']}' is not found in the pipeline {cat}.")
    if etype == "LEAD":
        if not rec.get("STATUS_ID"):
            rec["STATUS_ID"] = "NEW"
        elif not status_exists(state, "STATUS", rec["STATUS_ID"]):
            raise RestError(f"Status '{rec['STATUS_ID']}' is not found.")


def blank_record(etype: str) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for name, (ftype, flags) in SPECS[etype].items():
        if ftype == "crm_multifield" or "m" in flags:
            rec[name] = []
        elif ftype in INT_TYPES or ftype in ("datetime", "date"):
            rec[name] = None
        elif ftype == "double":
            rec[name] = 0.0
        elif ftype == "char":
            rec[name] = "N"
        else:
            rec[name] = ""
    return rec


def add_entity(
    state: State,
    etype: str,
    fields: dict[str, Any],
    user_id: int,
    *,
    entity_id: int | None = None,
    created: float | None = None,
    modified: float | None = None,
) -> int:
    ts = created if created is not None else now()
    rec = blank_record(etype)
    rec["OPENED"] = "Y"
    if etype == "DEAL":
        rec["CATEGORY_ID"] = 0
        rec["CURRENCY_ID"] = "PLN"
        rec["IS_NEW"] = "Y"
        rec["BEGINDATE"] = ts
        rec["CLOSEDATE"] = ts + 7 * 86400
    if etype in ("LEAD", "COMPANY"):
        rec["CURRENCY_ID"] = "PLN"
    _apply_fields(state, etype, rec, fields, creating=True)
    if etype == "DEAL" and rec.get("CATEGORY_ID") is None:
        rec["CATEGORY_ID"] = 0
    _validate_stage(state, etype, rec)
    if not rec.get("ASSIGNED_BY_ID"):
        rec["ASSIGNED_BY_ID"] = user_id
    new_id = entity_id if entity_id is not None else state.next_id(etype)
    rec.update(
        ID=new_id,
        CREATED_BY_ID=user_id,
        MODIFY_BY_ID=user_id,
        DATE_CREATE=ts,
        DATE_MODIFY=modified if modified is not None else ts,
    )
    if etype in ("DEAL", "LEAD"):
        rec["MOVED_BY_ID"] = user_id
        rec["MOVED_TIME"] = ts
    if etype == "LEAD" and not rec.get("TITLE"):
        rec["TITLE"] = f"Lead #{new_id}"
    _derive(state, etype, rec, None)
    state.entities[etype][new_id] = rec
    return new_id


def update_entity(
    state: State, etype: str, entity_id: int, fields: dict[str, Any], user_id: int
) -> None:
    rec = state.entities[etype][entity_id]
    old = dict(rec)
    new = dict(rec)
    _apply_fields(state, etype, new, fields, creating=False)
    _validate_stage(state, etype, new)
    ts = now()
    stage_key = {"DEAL": "STAGE_ID", "LEAD": "STATUS_ID"}.get(etype)
    if stage_key and new.get(stage_key) != old.get(stage_key):
        new["MOVED_BY_ID"] = user_id
        new["MOVED_TIME"] = ts
    new["MODIFY_BY_ID"] = user_id
    new["DATE_MODIFY"] = max(ts, (old.get("DATE_MODIFY") or 0) + 1e-6)
    _derive(state, etype, new, old)
    if etype == "DEAL" and new["CLOSED"] == "Y" and old.get("CLOSED") != "Y":
        new["CLOSEDATE"] = ts
    rec.clear()
    rec.update(new)


def touch_activity(state: State, etype: str, entity_id: int | None, user_id: int) -> None:
    rec = state.entities.get(etype, {}).get(entity_id or 0)
    if rec is not None:
        rec["LAST_ACTIVITY_TIME"] = now()
        rec["LAST_ACTIVITY_BY"] = user_id


# --------------------------------------------------------------------------------------------
# Reads


def _legacy_value(ftype: str, flags: str, value: Any) -> Any:
    if "m" in flags and ftype != "crm_multifield":
        return [_legacy_value(ftype, "", v) for v in value or []]
    if ftype in INT_TYPES:
        return None if value is None else str(value)
    if ftype == "double":
        return None if value is None else f"{float(value):.2f}"
    if ftype in ("datetime", "date"):
        return iso(value)
    if ftype == "crm_multifield":
        return [
            {
                "ID": str(m["ID"]),
                "VALUE_TYPE": m["VALUE_TYPE"],
                "VALUE": m["VALUE"],
                "TYPE_ID": m["TYPE_ID"],
            }
            for m in value or []
        ]
    return value


def legacy_row(
    etype: str, rec: dict[str, Any], select: Any = None, uf_names: Any = ()
) -> dict[str, Any]:
    """Render a record like legacy crm.*.get (select=None) or crm.*.list (select list).

    Every registered user field is rendered (null when unset), like the portal does."""
    specs = SPECS[etype]
    ufs = sorted(set(uf_names) | {k for k in rec if k.startswith("UF_")})
    wanted: list[str]
    if select is None:
        wanted = [n for n, (_, fl) in specs.items() if "w" not in fl] + ufs
    else:
        names = [str(s) for s in as_list(select)] or ["*"]
        wanted = ["ID"]
        for name in names:
            if name == "*":
                wanted += [
                    n for n, (t, fl) in specs.items() if "w" not in fl and t != "crm_multifield"
                ]
            elif name == "UF_*":
                wanted += ufs
            elif name.upper() in specs and "w" not in specs[name.upper()][1]:
                wanted.append(name.upper())
            elif name.startswith("UF_"):
                wanted.append(name)
    out: dict[str, Any] = {}
    for name in wanted:
        if name in out:
            continue
        if name.startswith("UF_"):
            out[name] = rec.get(name)
            continue
        ftype, flags = specs[name]
        out[name] = _legacy_value(ftype, flags, rec.get(name))
    return out


def describe_fields(state: State, etype: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, (ftype, flags) in SPECS[etype].items():
        info: dict[str, Any] = {
            "type": ftype,
            "isRequired": "q" in flags,
            "isReadOnly": "r" in flags,
            "isImmutable": "i" in flags,
            "isMultiple": "m" in flags,
            "isDynamic": False,
            "title": name.replace("_", " ").title(),
        }
        status_type = STATUS_TYPES.get(name)
        if isinstance(status_type, dict):
            status_type = status_type.get(etype)
        if ftype == "crm_status" and status_type:
            info["statusType"] = status_type
        result[name] = info
    for name, uf in sorted(state.uf_fields.get(etype, {}).items()):
        result[name] = {
            "type": uf.get("type", "string"),
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": bool(uf.get("multiple")),
            "isDynamic": True,
            "title": name,
            "listLabel": uf.get("label", name),
            "formLabel": uf.get("label", name),
            "filterLabel": uf.get("label", name),
        }
    return result


def display_name(etype: str, rec: dict[str, Any]) -> str:
    if etype in ("CONTACT", "LEAD"):
        name = " ".join(p for p in (rec.get("NAME"), rec.get("LAST_NAME")) if p)
        if name:
            return name
    return str(rec.get("TITLE") or "")


def find_by_phone(state: State, etype: str, normalized: set[str]) -> list[int]:
    hits = []
    for eid, rec in sorted(state.entities[etype].items()):
        for m in rec.get("PHONE") or []:
            if normalize_phone(m["VALUE"]) in normalized:
                hits.append(eid)
                break
    return hits


def find_by_email(state: State, etype: str, emails: set[str]) -> list[int]:
    return [
        eid
        for eid, rec in sorted(state.entities[etype].items())
        if any(m["VALUE"].strip().lower() in emails for m in rec.get("EMAIL") or [])
    ]


# --------------------------------------------------------------------------------------------
# crm.item.* (camelCase, real types)

CAMEL_SPECIAL = {
    "DATE_CREATE": "createdTime",
    "DATE_MODIFY": "updatedTime",
    "CREATED_BY_ID": "createdBy",
    "MODIFY_BY_ID": "updatedBy",
    "MOVED_TIME": "movedTime",
    "MOVED_BY_ID": "movedBy",
    "COMPANY_TYPE": "typeId",
    "BEGINDATE": "begindate",
    "CLOSEDATE": "closedate",
}
LEAD_SPECIAL = {"STATUS_ID": "stageId", "STATUS_SEMANTIC_ID": "stageSemanticId"}


def camel(name: str, etype: str) -> str:
    if etype == "LEAD" and name in LEAD_SPECIAL:
        return LEAD_SPECIAL[name]
    if name in CAMEL_SPECIAL:
        return CAMEL_SPECIAL[name]
    if name.startswith("UF_"):
        parts = name.lower().split("_")
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    parts = name.lower().split("_")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def uncamel_map(state: State, etype: str, rec_keys: list[str] | None = None) -> dict[str, str]:
    names = list(SPECS[etype]) + list(state.uf_fields.get(etype, {})) + list(rec_keys or [])
    return {camel(n, etype): n for n in names}


def item_row(etype: str, rec: dict[str, Any], select: Any) -> dict[str, Any]:
    names = [str(s) for s in as_list(select)] or ["*"]
    out: dict[str, Any] = {}
    want_all = "*" in names
    for name, (ftype, _flags) in SPECS[etype].items():
        if ftype == "crm_multifield":
            continue
        key = camel(name, etype)
        if not want_all and key not in names:
            continue
        value = rec.get(name)
        if ftype in ("datetime", "date"):
            value = iso(value) or None
        out[key] = value
    for name in sorted(k for k in rec if k.startswith("UF_")):
        key = camel(name, etype)
        if want_all or key in names or "uf_*" in (n.lower() for n in names):
            out[key] = rec[name]
    if "PHONE" in SPECS[etype] and (want_all or "fm" in names):
        out["fm"] = [
            {
                "id": m["ID"],
                "typeId": m["TYPE_ID"],
                "valueType": m["VALUE_TYPE"],
                "value": m["VALUE"],
            }
            for key in MULTIFIELDS
            for m in rec.get(key) or []
        ]
    out["id"] = rec["ID"]
    out["entityTypeId"] = ENTITY_TYPE_IDS[etype]
    return out


def item_fields_to_legacy(state: State, etype: str, fields: dict[str, Any]) -> dict[str, Any]:
    mapping = uncamel_map(state, etype)
    legacy: dict[str, Any] = {}
    for key, value in fields.items():
        k = str(key)
        if k == "fm":
            for m in as_list(value):
                if isinstance(m, dict):
                    tid = str(m.get("typeId") or "PHONE").upper()
                    legacy.setdefault(tid, []).append(
                        {"VALUE": m.get("value"), "VALUE_TYPE": m.get("valueType") or "WORK"}
                    )
            continue
        if k in mapping:
            legacy[mapping[k]] = value
        elif re.fullmatch(r"uf[A-Z]\w*", k) or k.startswith("UF_"):
            legacy[k if k.startswith("UF_") else re.sub(r"([A-Z])", r"_\1", k).upper()] = value
    return legacy
