"""Pure translations between SIMtrix's domain terms and Bitrix24's fields. No I/O here."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from crm.domain import CallerLookup, RoutingFacts

# Domain entity type → (Bitrix24 type name, owner type id, UF_CRM_TASK prefix) (REFERENCE 6).
ENTITY_TYPES: dict[str, tuple[str, int, str]] = {
    "lead": ("LEAD", 1, "L"),
    "deal": ("DEAL", 2, "D"),
    "contact": ("CONTACT", 3, "C"),
    "company": ("COMPANY", 4, "CO"),
}
CLIENT_TYPES = ("contact", "company", "lead")  # what a phone number can identify
DIRECTIONS = {"incoming": 2, "outgoing": 1}  # externalCall TYPE (REFERENCE 4.1)
ACTIVITY_DIRECTIONS = {"incoming": 1, "outgoing": 2}  # crm.activity DIRECTION (REFERENCE 6)
OUTCOMES = ("answered", "missed", "rejected", "busy", "no_answer", "failed", "cancelled")
ORIGINATOR = "simtrix"
RECORD_EXTENSIONS = (".mp3", ".wav")


def b24_type(entity_type: str) -> str:
    """``"contact"`` → ``"CONTACT"``; refuses what is not an entity type."""
    try:
        return ENTITY_TYPES[entity_type][0]
    except KeyError:
        raise ValueError(f"Unknown CRM entity type {entity_type!r}") from None


def owner_type_id(entity_type: str) -> int:
    b24_type(entity_type)
    return ENTITY_TYPES[entity_type][1]


def domain_type(b24_name: str) -> str | None:
    upper = (b24_name or "").upper()
    for name, (b24, _, _) in ENTITY_TYPES.items():
        if b24 == upper:
            return name
    return None


def task_binding(entity: tuple[str, int]) -> str:
    """``("contact", 12)`` → ``"C_12"`` for a task's UF_CRM_TASK."""
    entity_type, entity_id = entity
    b24_type(entity_type)
    return f"{ENTITY_TYPES[entity_type][2]}_{int(entity_id)}"


def automation_target(entity: tuple[str, int]) -> str:
    """``("deal", 57)`` → ``"DEAL_57"`` (REFERENCE 5.6)."""
    return f"{b24_type(entity[0])}_{int(entity[1])}"


def entity_url(portal_url: str, entity_type: str, entity_id: int) -> str:
    return f"{portal_url.rstrip('/')}/crm/{entity_type}/details/{int(entity_id)}/"


def origin_id(intent_key: str) -> str:
    """A short, stable marker stored on objects SIMtrix creates, to find them again."""
    return "sx-" + hashlib.sha256(intent_key.encode()).hexdigest()[:32]


def finish_status_code(outcome: str, failed_reason: str = "") -> str:
    """How a call ended, as ``telephony.externalCall.finish`` STATUS_CODE (REFERENCE 4.2, 4.8).

    ``missed`` (rang, not answered) is 304, which Bitrix24 shows as a missed call and which fires
    the "Missed call" automation trigger; ``no_answer`` (we called, nobody picked up) is 480
    "temporarily unavailable"; ``cancelled`` (the caller hung up first) is 603-S. A ``failed``
    call is mapped from its reason where one is recognisable, else ``OTHER``.
    """
    codes = {
        "answered": "200",
        "missed": "304",
        "rejected": "603",
        "busy": "486",
        "no_answer": "480",
        "cancelled": "603-S",
    }
    if outcome in codes:
        return codes[outcome]
    if outcome != "failed":
        raise ValueError(f"Unknown call outcome {outcome!r}; expected one of {OUTCOMES}")
    reason = failed_reason.lower()
    for pattern, code in (
        (r"invalid|wrong number|not exist|unallocated", "404"),
        (r"funds|credit|balance", "402"),
        (r"block|barred|forbidden", "403"),
        (r"unreachable|unavailable|no service|no network|network|congest", "503"),
    ):
        if re.search(pattern, reason):
            return code
    return "OTHER"


def iso_datetime(value: datetime) -> str:
    """ISO 8601 with an offset: Bitrix24 reads offset-less times in portal time (pitfall 5)."""
    if value.tzinfo is None:
        raise ValueError("Bitrix24 needs an aware datetime (with an offset)")
    return value.isoformat(timespec="seconds")


def as_int(value: Any) -> int | None:
    """Legacy CRM methods return numbers as strings (REFERENCE 1.3)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def person_name(fields: dict[str, Any]) -> str:
    parts = [str(fields.get(k) or "").strip() for k in ("NAME", "LAST_NAME")]
    return " ".join(p for p in parts if p)


def display_name(entity_type: str, fields: dict[str, Any]) -> str:
    """The name a person would recognise: a contact's or lead's person, a company's title."""
    if entity_type == "company":
        return str(fields.get("TITLE") or "").strip() or f"Company #{fields.get('ID')}"
    name = person_name(fields)
    if name:
        return name
    if entity_type in ("lead", "deal"):
        return (
            str(fields.get("TITLE") or "").strip() or f"{entity_type.title()} #{fields.get('ID')}"
        )
    return f"Contact #{fields.get('ID')}"


def date_key(fields: dict[str, Any]) -> str:
    """Sort key for "most recently active": ISO timestamps with one offset sort as strings."""
    return str(fields.get("LAST_ACTIVITY_TIME") or fields.get("DATE_MODIFY") or "")


def is_open_lead(fields: dict[str, Any]) -> bool:
    semantic = fields.get("STATUS_SEMANTIC_ID")
    return semantic in (None, "", "P")


def user_name(fields: dict[str, Any]) -> str:
    return person_name(fields) or str(fields.get("EMAIL") or "") or f"User #{fields.get('ID')}"


def stage_semantics(row: dict[str, Any]) -> str:
    """``crm.status.list`` SEMANTICS (None/S/F) or EXTRA.SEMANTICS → process|success|failure."""
    raw_extra = row.get("EXTRA")
    extra = raw_extra if isinstance(raw_extra, dict) else {}
    value = str(extra.get("SEMANTICS") or row.get("SEMANTICS") or "").lower()
    if value in ("s", "success"):
        return "success"
    if value in ("f", "failure", "apology"):
        return "failure"
    return "process"


def stage_category(entity_id: str) -> int | None:
    """``DEAL_STAGE`` → 0, ``DEAL_STAGE_3`` → 3, anything else → None."""
    if entity_id == "DEAL_STAGE":
        return 0
    match = re.fullmatch(r"DEAL_STAGE_(\d+)", entity_id or "")
    return int(match[1]) if match else None


def phone_values(fields: dict[str, Any]) -> list[str]:
    values = fields.get("PHONE") or []
    if isinstance(values, dict):
        values = list(values.values())
    return [str(v.get("VALUE")) for v in values if isinstance(v, dict) and v.get("VALUE")]


# Domain names of the fields routing rules read most; any other field (UF_* included) keeps the
# name the admin sees in Bitrix24.
ROUTING_ENTITY_FIELDS = {
    "responsible": "ASSIGNED_BY_ID",
    "type": "TYPE_ID",
    "source": "SOURCE_ID",
    "status": "STATUS_ID",
}


def routing_facts(lookup: CallerLookup) -> RoutingFacts:
    """What routing rules may read about a caller (scenarios/routing/rules.py), from a lookup."""
    fields = dict(lookup.entity_fields or {})
    entity = {**fields, **{name: fields.get(b24) for name, b24 in ROUTING_ENTITY_FIELDS.items()}}
    if lookup.entity is not None and lookup.entity.type == "company":
        entity["type"] = fields.get("COMPANY_TYPE")
    return {
        "entity_type": lookup.entity.type if lookup.entity is not None else "",
        "entity": entity,
        "responsible_id": lookup.responsible.id if lookup.responsible else None,
        "deals": [
            {
                **deal.fields,
                "id": deal.id,
                "pipeline": str(deal.category_id),
                "stage": deal.stage_id,
                "responsible": deal.assigned_by_id,
            }
            for deal in lookup.deals
        ],
    }


def php_dict(value: Any) -> dict[str, Any]:
    """An object of Bitrix24's answer: PHP serialises an empty array as ``[]`` where an
    object is expected (REFERENCE 1.3)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}
