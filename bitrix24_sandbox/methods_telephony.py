"""External-PBX telephony: register -> show/hide -> finish -> attachRecord (REFERENCE 4.1-4.4),
external lines (4.5) and the portal side of click-to-call (4.7: register, then
ONEXTERNALCALLSTART).

The state machine is what matters to the bridge: an active-call table with the 30-minute
re-registration rule, a statistic table written by finish, and CRM activities only for calls
bound to a CRM entity at register time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import ssl
import urllib.error
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlparse

from . import crm_store as S
from . import events
from .core import (
    PORTAL_TZ,
    Ctx,
    RestError,
    as_list,
    now,
    rest_method,
    to_bool,
    to_float,
    to_int,
)
from .methods_activity import create_activity
from .phone import clean_phone, international_phone, normalize_phone, phone_extension

if TYPE_CHECKING:
    from .state import State

DEDUP_WINDOW = 30 * 60
CALL_TYPES = {
    1: "outgoing",
    2: "incoming",
    3: "incoming with redirection",
    4: "callback",
    5: "info",
}
SEARCH_ORDER = ("CONTACT", "LEAD", "COMPANY")  # searchCrmEntities order (REFERENCE 3.2)
BIND_ORDER = ("CONTACT", "COMPANY", "LEAD")  # primary entity picked by register's auto-search


def _resolve_user(state: State, p: dict[str, Any]) -> dict[str, Any]:
    user_id = p.get("USER_ID")
    inner = p.get("USER_PHONE_INNER")
    if user_id in (None, "", 0, "0") and inner in (None, ""):
        raise RestError("USER_ID or USER_PHONE_INNER should be set")
    user = None
    if user_id not in (None, "", 0, "0"):
        user = state.active_user(user_id)
    else:
        user = next(
            (
                u
                for u in state.users.values()
                if u["ACTIVE"] and str(u.get("UF_PHONE_INNER") or "") == str(inner)
            ),
            None,
        )
    if user is None or user.get("USER_TYPE") != "employee":
        raise RestError("User is not found or is not active")
    return user


def _parse_start(value: Any) -> tuple[str, float]:
    """Keep CALL_START_DATE exactly as sent (with its offset); reject non-ISO input."""
    if value in (None, ""):
        ts = now()
        return datetime.fromtimestamp(ts, PORTAL_TZ).isoformat(timespec="seconds"), ts
    try:
        dt = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise RestError("CALL_START_DATE should be in the ISO-8601 format") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=PORTAL_TZ)  # the time shift pitfall of REFERENCE 7.5
    return str(value), dt.timestamp()


def _employee_phones(state: State) -> set[str]:
    phones: set[str] = set()
    for u in state.users.values():
        if not u["ACTIVE"]:
            continue
        for key in ("PERSONAL_MOBILE", "PERSONAL_PHONE", "WORK_PHONE", "UF_PHONE_INNER"):
            n = normalize_phone(str(u.get(key) or ""))
            if n:
                phones.add(n)
    return phones


def _pick_source(state: State, requested: Any) -> str:
    for candidate in (requested, "CALL", "OTHER"):
        if candidate and S.status_exists(state, "SOURCE", candidate):
            return str(candidate)
    return "OTHER"


def _register_result(call: dict[str, Any]) -> dict[str, Any]:
    result = {
        "CALL_ID": call["CALL_ID"],
        "CRM_CREATED_LEAD": call["CRM_CREATED_LEAD"],
        "CRM_CREATED_ENTITIES": call["CRM_CREATED_ENTITIES"],
        "CRM_ENTITY_TYPE": call["CRM_ENTITY_TYPE"],
        "CRM_ENTITY_ID": call["CRM_ENTITY_ID"],
    }
    if call.get("LEAD_CREATION_ERROR"):
        result["LEAD_CREATION_ERROR"] = call["LEAD_CREATION_ERROR"]
    return result


def register_call(
    state: State,
    p: dict[str, Any],
    *,
    app_key: str,
    auth_mode: str,
    app_id: int | None,
    registered_by: str = "rest",
) -> dict[str, Any]:
    """``Helper::registerExternalCall``: what telephony.externalCall.register does, also used by
    the portal itself for a click-to-call (``start_call``). Every call is logged in
    ``state.registrations`` (NEW false = the 30-minute re-registration rule matched)."""
    user = _resolve_user(state, p)
    phone = clean_phone(p.get("PHONE_NUMBER"))
    if not phone:
        raise RestError("Unsupported phone number format")
    call_type = to_int(p.get("TYPE"))
    if call_type not in CALL_TYPES:
        raise RestError("Unknown TYPE")
    start_raw, start_ts = _parse_start(p.get("CALL_START_DATE"))
    normalized = normalize_phone(phone)
    line = p.get("LINE_NUMBER")
    line = str(line) if line not in (None, "") else None
    external_id = p.get("EXTERNAL_CALL_ID")
    external_id = str(external_id) if external_id not in (None, "") else None
    t = now()

    # Re-registration: the same still-active call within 30 minutes gets the same CALL_ID;
    # LINE_NUMBER / EXTERNAL_CALL_ID only narrow the match when they are given.
    for call in state.active_calls.values():
        if (
            call["USER_ID"] == user["ID"]
            and call["PHONE_NORMALIZED"] == normalized
            and call["TYPE"] == call_type
            and call["APP_KEY"] == app_key
            and t - call["REGISTERED_AT"] < DEDUP_WINDOW
            and (line is None or call["LINE_NUMBER"] == line)
            and (external_id is None or call["EXTERNAL_CALL_ID"] == external_id)
        ):
            call["REREGISTRATIONS"].append({"TIME": t, "BY": registered_by, "PARAMS": dict(p)})
            _log_registration(state, call, registered_by, new=False, at=t)
            result = _register_result(call)
            result.update(CRM_CREATED_LEAD=None, CRM_CREATED_ENTITIES=[])
            return result

    entity_type, entity_id = "", None
    created_lead = None
    created: list[dict[str, Any]] = []
    lead_error = None
    wanted_type = str(p.get("CRM_ENTITY_TYPE") or "").upper()
    wanted_id = to_int(p.get("CRM_ENTITY_ID"))
    internal = any(
        str(u.get("UF_PHONE_INNER") or "") == phone
        for u in state.users.values()
        if u["ACTIVE"] and u.get("UF_PHONE_INNER")
    )
    if wanted_type in BIND_ORDER and wanted_id and wanted_id in state.entities[wanted_type]:
        entity_type, entity_id = wanted_type, wanted_id
    elif not internal:
        for etype in BIND_ORDER:
            found = S.find_by_phone(state, etype, {normalized} if normalized else set())
            if found:
                entity_type, entity_id = etype, found[0]
                break
        if not entity_type and to_bool(p.get("CRM_CREATE")):
            if normalized in _employee_phones(state):
                lead_error = "Lead creation is disabled for local users"
            else:
                title = {1: "Outgoing call", 4: "Callback"}.get(call_type, "Incoming call")
                fields = {
                    "TITLE": f"{phone} - {title}",
                    "STATUS_ID": "NEW",
                    "SOURCE_ID": _pick_source(state, p.get("CRM_SOURCE")),
                    "SOURCE_DESCRIPTION": f"Call to {line}" if line else "",
                    "ASSIGNED_BY_ID": user["ID"],
                    "OPENED": "Y",
                    "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
                }
                created_lead = S.add_entity(state, "LEAD", fields, user["ID"])
                events.fire_crm(state, "LEAD", "ADD", created_lead)
                created = [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": created_lead}]
                entity_type, entity_id = "LEAD", created_lead

    digest = hashlib.md5(f"{user['ID']}|{phone}|{t}|{secrets.token_hex(8)}".encode()).hexdigest()
    call_id = f"externalCall.{digest}.{int(t)}"
    call = {
        "CALL_ID": call_id,
        "USER_ID": user["ID"],
        "PHONE_NUMBER": phone,
        "PHONE_NORMALIZED": normalized,
        "TYPE": call_type,
        "LINE_NUMBER": line,
        "EXTERNAL_CALL_ID": external_id,
        "CALL_START_DATE": start_raw,
        "CALL_START_TS": start_ts,
        "CRM_ENTITY_TYPE": entity_type,
        "CRM_ENTITY_ID": entity_id,
        "CRM_CREATED_LEAD": created_lead,
        "CRM_CREATED_ENTITIES": created,
        "LEAD_CREATION_ERROR": lead_error,
        "INTERNAL": internal,
        "SHOW": to_bool(p.get("SHOW", 1)) is not False,
        "ADD_TO_CHAT": to_bool(p.get("ADD_TO_CHAT", 1)) is not False,
        "CRM_SOURCE": p.get("CRM_SOURCE"),
        "APP_KEY": app_key,
        "AUTH": auth_mode,
        "REST_APP_ID": app_id,
        "REGISTERED_BY": registered_by,
        "REGISTERED_AT": t,
        "REREGISTRATIONS": [],
        "SHOWN_TO": [user["ID"]] if to_bool(p.get("SHOW", 1)) is not False else [],
        "EVENTS": [],
        "PARAMS": dict(p),
    }
    state.active_calls[call_id] = call
    _log_registration(state, call, registered_by, new=True, at=t)
    return _register_result(call)


def _log_registration(state: State, call: dict[str, Any], by: str, *, new: bool, at: float) -> None:
    state.registrations.append(
        {
            "CALL_ID": call["CALL_ID"],
            "REGISTERED_BY": by,
            "NEW": new,
            "APP_KEY": call["APP_KEY"],
            "USER_ID": call["USER_ID"],
            "PHONE_NUMBER": call["PHONE_NUMBER"],
            "TYPE": call["TYPE"],
            "TIME": at,
        }
    )


@rest_method("telephony.externalcall.register", "telephony")
def telephony_externalcall_register(ctx: Ctx, p: dict[str, Any]) -> Any:
    return register_call(
        ctx.state,
        p,
        app_key=ctx.auth.client_id or "webhook",
        auth_mode=ctx.auth.mode,
        app_id=ctx.auth.app_id,
    )


def _card_event(ctx: Ctx, p: dict[str, Any], action: str) -> bool:
    call = ctx.state.active_calls.get(str(p.get("CALL_ID") or ""))
    if call is None:
        return False
    users = [u for u in (to_int(x) for x in as_list(p.get("USER_ID"))) if u] or [call["USER_ID"]]
    call["EVENTS"].append({"ACTION": action, "USER_IDS": users, "TIME": now()})
    shown = set(call["SHOWN_TO"])
    shown = shown | set(users) if action == "show" else shown - set(users)
    call["SHOWN_TO"] = sorted(shown)
    return True


@rest_method("telephony.externalcall.show", "telephony")
def telephony_externalcall_show(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _card_event(ctx, p, "show")


@rest_method("telephony.externalcall.hide", "telephony")
def telephony_externalcall_hide(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _card_event(ctx, p, "hide")


@rest_method("telephony.externalcall.finish", "telephony")
def telephony_externalcall_finish(ctx: Ctx, p: dict[str, Any]) -> Any:
    call_id = p.get("CALL_ID")
    if not isinstance(call_id, str):
        raise RestError("CALL_ID must be a string", "INVALID_ARGUMENT")
    user = _resolve_user(ctx.state, p)
    call = ctx.state.active_calls.get(call_id)
    if call is None:
        raise RestError("Call is not found (call should be registered prior to finishing")
    del ctx.state.active_calls[call_id]
    duration = max(to_int(p.get("DURATION"), 0) or 0, 0)
    status_code = str(p.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
    vote = to_int(p.get("VOTE"))
    incoming = call["TYPE"] in (2, 3)
    errors: dict[str, str] = {}
    activity_id = None
    etype, eid = call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]
    if call["CRM_CREATED_LEAD"] and call["CRM_CREATED_LEAD"] in ctx.state.entities["LEAD"]:
        # Entities auto-created at register belong to whoever finishes the call (REFERENCE 4.2).
        lead = ctx.state.entities["LEAD"][call["CRM_CREATED_LEAD"]]
        if lead["ASSIGNED_BY_ID"] != user["ID"]:
            lead["ASSIGNED_BY_ID"] = user["ID"]
            events.fire_crm(ctx.state, "LEAD", "UPDATE", lead["ID"])
    if etype and eid and eid in ctx.state.entities.get(etype, {}):
        missed = incoming and status_code == "304"
        number = call["PHONE_NUMBER"]
        subject = f"Incoming call from {number}" if incoming else f"Outgoing call to {number}"
        if missed:
            subject = f"Missed call from {number}"
        act = create_activity(
            ctx.state,
            {
                "OWNER_TYPE_ID": S.ENTITY_TYPE_IDS[etype],
                "OWNER_ID": eid,
                "TYPE_ID": 2,
                "PROVIDER_ID": "VOXIMPLANT_CALL",
                "PROVIDER_TYPE_ID": "CALLBACK" if call["TYPE"] == 4 else "CALL",
                "DIRECTION": 1 if incoming else 2,
                "ORIGIN_ID": f"VI_{call_id}",
                "ASSOCIATED_ENTITY_ID": None,
                "SUBJECT": subject,
                "START_TIME": call["CALL_START_TS"],
                "END_TIME": call["CALL_START_TS"] + duration,
                "DEADLINE": call["CALL_START_TS"] + duration,
                "COMPLETED": "N" if missed else "Y",
                "RESPONSIBLE_ID": user["ID"],
                "SETTINGS": {"MISSED_CALL": True} if missed else {},
                "RESULT_MARK": vote or 0,
                "COMMUNICATIONS": [
                    {
                        "ID": 1,
                        "TYPE": "PHONE",
                        "VALUE": number,
                        "ENTITY_ID": eid,
                        "ENTITY_TYPE_ID": S.ENTITY_TYPE_IDS[etype],
                    }
                ],
                "BINDINGS": [{"OWNER_TYPE_ID": S.ENTITY_TYPE_IDS[etype], "OWNER_ID": eid}],
            },
            user["ID"],
        )
        activity_id = act["ID"]
    else:
        errors["ACTIVITY_CREATION"] = "Could not find associated crm entity for the current call"

    stat_id = ctx.state.next_id("statistic")
    app = next((a for a in ctx.state.apps.values() if a["CLIENT_ID"] == call["APP_KEY"]), None)
    result: dict[str, Any] = {
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": call["EXTERNAL_CALL_ID"],
        "PORTAL_USER_ID": user["ID"],
        "PHONE_NUMBER": call["PHONE_NUMBER"],
        "PORTAL_NUMBER": call["LINE_NUMBER"] or f"REST_APP:{call['REST_APP_ID'] or ''}",
        "INCOMING": str(call["TYPE"]),
        "CALL_DURATION": duration,
        "CALL_START_DATE": {},  # a PHP DateTime object serialises as {} (REFERENCE 4.2)
        "CALL_STATUS": 1 if duration > 0 else 0,
        "CALL_VOTE": vote,
        "COST": to_float(p.get("COST"), 0.0),
        "COST_CURRENCY": str(p.get("COST_CURRENCY") or ""),
        "CALL_FAILED_CODE": status_code,
        "CALL_FAILED_REASON": str(p.get("FAILED_REASON") or ""),
        "REST_APP_ID": None if app is None else str(app["APP_ID"]),
        "REST_APP_NAME": None if app is None else app["NAME"],
        "CRM_ACTIVITY_ID": activity_id,
        "COMMENT": None,
        "CRM_ENTITY_TYPE": etype,
        "CRM_ENTITY_ID": eid,
        "ID": stat_id,
    }
    if errors:
        result["ERRORS"] = errors
    ctx.state.finished_calls[call_id] = {
        **call,
        "STATISTIC": result,
        "FINISH_PARAMS": dict(p),
        "FINISHED_BY": user["ID"],
        "FINISHED_AT": now(),
        "RECORD_FILE_ID": None,
    }
    return result


# --------------------------------------------------------------------------------------------
# Recordings


def _check_extension(filename: str) -> None:
    if not filename.strip():
        raise RestError("File name is empty")
    if os.path.splitext(filename.lower())[1] not in (".mp3", ".wav"):
        raise RestError("Wrong file extension. Only wav and mp3 are allowed")


def store_record(
    state: Any, call_id: str, filename: str, content: bytes, source: str
) -> dict[str, Any]:
    """Attach a recording to a finished call; a new one replaces the previous (REFERENCE 4.3)."""
    stat = state.finished_calls[call_id]
    file_id = state.next_id("file")
    state.records[file_id] = {
        "FILE_ID": file_id,
        "CALL_ID": call_id,
        "FILENAME": filename,
        "SIZE": len(content),
        "SHA256": hashlib.sha256(content).hexdigest(),
        "SOURCE": source,
        "CREATED": now(),
    }
    stat["RECORD_FILE_ID"] = file_id
    activity_id = stat["STATISTIC"].get("CRM_ACTIVITY_ID")
    if activity_id and activity_id in state.activities:
        state.activities[activity_id]["STORAGE_ELEMENT_IDS"] = [file_id]
    return {"FILE_ID": file_id}


def _fetch(url: str) -> bytes:
    # Bitrix24 fetches RECORD_URL once, without verifying TLS (REFERENCE 4.3).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raise RestError(f"Server returns HTTP error code {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RestError(f"Server is not available: {exc}", "SERVER_NOT_AVAILABLE") from None


@rest_method("telephony.externalcall.attachrecord", "telephony")
def telephony_externalcall_attachrecord(ctx: Ctx, p: dict[str, Any]) -> Any:
    call_id = str(p.get("CALL_ID") or "")
    filename = p.get("FILENAME")
    record_url = p.get("RECORD_URL")
    if filename in (None, "") and record_url in (None, ""):
        raise RestError(
            "Required parameters are not set. Request should contain or URL or FILENAME parameter"
        )
    if call_id not in ctx.state.finished_calls:
        raise RestError(
            "Call is not found in the statistic table. Looks like it is not finished yet."
        )
    if record_url not in (None, ""):
        name = str(filename or os.path.basename(urlparse(str(record_url)).path))
        _check_extension(name)
        return store_record(ctx.state, call_id, name, _fetch(str(record_url)), "url")
    name = str(filename)
    _check_extension(name)
    if "FILE_CONTENT" in p:
        raw = p.get("FILE_CONTENT")
        if not isinstance(raw, str) or raw.strip() == "":
            raise RestError("File content is empty.")
        try:
            content = base64.b64decode("".join(raw.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RestError(
                "File content is not properly encoded. Base64 encoding is expected."
            ) from None
        if not content:
            raise RestError("File content is empty.")
        return store_record(ctx.state, call_id, name, content, "base64")
    token = f"telephony|{secrets.token_hex(16)}"
    ctx.state.upload_tokens[token] = {"CALL_ID": call_id, "FILENAME": name, "CREATED": now()}
    query = {"token": token}
    if ctx.auth.access_token:
        query = {"auth": ctx.auth.access_token, **query}
    return {"uploadUrl": f"{ctx.base_url}/rest/upload.json?{urlencode(query)}", "fieldName": "file"}


def complete_upload(state: Any, token: str, filename: str | None, content: bytes) -> dict[str, Any]:
    """Second step of the FILENAME-only flow: the multipart POST to uploadUrl."""
    info = state.upload_tokens.pop(token, None)
    if info is None:
        raise RestError("Upload token is not valid or already used", "INVALID_TOKEN")
    if info["CALL_ID"] not in state.finished_calls:
        raise RestError(
            "Call is not found in the statistic table. Looks like it is not finished yet."
        )
    if not content:
        raise RestError("File content is empty.")
    return store_record(
        state, info["CALL_ID"], info["FILENAME"] or filename or "", content, "upload"
    )


# --------------------------------------------------------------------------------------------
# Lookup for routing


@rest_method("telephony.externalcall.searchcrmentities", "telephony")
def telephony_externalcall_searchcrmentities(ctx: Ctx, p: dict[str, Any]) -> Any:
    number = p.get("PHONE_NUMBER")
    if number in (None, ""):
        raise RestError("PHONE_NUMBER is empty")
    code = normalize_phone(str(number))
    rows: list[dict[str, Any]] = []
    for etype in SEARCH_ORDER:
        for eid in S.find_by_phone(ctx.state, etype, {code} if code else set()):
            rec = ctx.state.entities[etype][eid]
            uid = rec.get("ASSIGNED_BY_ID")
            user = ctx.state.users.get(uid or 0) or {}
            rows.append(
                {
                    "CRM_ENTITY_TYPE": etype,
                    "CRM_ENTITY_ID": eid,
                    "ASSIGNED_BY_ID": uid,
                    "NAME": S.display_name(etype, rec),
                    "ASSIGNED_BY": {
                        "ID": None if uid is None else str(uid),
                        "TIMEMAN_STATUS": user.get("TIMEMAN_STATUS", "NOT_INSTALLED"),
                        "USER_PHONE_INNER": user.get("UF_PHONE_INNER") or None,
                        "WORK_PHONE": user.get("WORK_PHONE") or None,
                        "PERSONAL_PHONE": user.get("PERSONAL_PHONE") or None,
                        "PERSONAL_MOBILE": user.get("PERSONAL_MOBILE") or None,
                    },
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# External lines (REFERENCE 4.5). Lines belong to the calling app; webhook calls share one
# "webhook" pseudo-app, like register/finish. Errors come without a code in practice (1.4).


def _line_owner(ctx: Ctx) -> str:
    return ctx.auth.client_id or "webhook"


def _line_flag(value: Any, default: str = "Y") -> str:
    if value in (None, ""):
        return default
    return "Y" if to_bool(value) else "N"


def find_line(state: State, app_key: str, number: str) -> dict[str, Any] | None:
    return next(
        (
            line
            for line in state.external_lines.values()
            if line["APP_KEY"] == app_key and line["NUMBER"] == number
        ),
        None,
    )


def _existing_line(ctx: Ctx, p: dict[str, Any]) -> dict[str, Any]:
    number = str(p.get("NUMBER") or "").strip()
    if not number:
        raise RestError("NUMBER should not be empty")
    line = find_line(ctx.state, _line_owner(ctx), number)
    if line is None:
        raise RestError(f"Could not find line with number {number}")
    return line


@rest_method("telephony.externalline.add", "telephony")
def telephony_externalline_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    number = str(p.get("NUMBER") or "").strip()
    if not number:
        raise RestError("NUMBER should not be empty")
    if find_line(ctx.state, _line_owner(ctx), number) is not None:
        raise RestError("Line already exists")
    line_id = ctx.state.next_id("external_line")
    name = p.get("NAME")
    ctx.state.external_lines[line_id] = {
        "ID": line_id,
        "NUMBER": number,
        "NAME": None if name is None else str(name),
        "CRM_AUTO_CREATE": _line_flag(p.get("CRM_AUTO_CREATE")),
        "APP_KEY": _line_owner(ctx),
        "REST_APP_ID": ctx.auth.app_id,
        "CREATED": now(),
    }
    return {"ID": line_id}


@rest_method("telephony.externalline.get", "telephony")
def telephony_externalline_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    owner = _line_owner(ctx)
    return [
        {"NUMBER": line["NUMBER"], "NAME": line["NAME"], "CRM_AUTO_CREATE": line["CRM_AUTO_CREATE"]}
        for _, line in sorted(ctx.state.external_lines.items())
        if line["APP_KEY"] == owner
    ]


@rest_method("telephony.externalline.update", "telephony")
def telephony_externalline_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    changes: dict[str, Any] = {}
    if p.get("NAME") is not None:
        changes["NAME"] = str(p["NAME"])
    if p.get("CRM_AUTO_CREATE") not in (None, ""):
        changes["CRM_AUTO_CREATE"] = _line_flag(p["CRM_AUTO_CREATE"])
    if not changes:
        raise RestError("There are no fields to update")
    line = _existing_line(ctx, p)
    line.update(changes)
    return {"ID": str(line["ID"])}  # the ORM hands back the primary key as read: a string


@rest_method("telephony.externalline.delete", "telephony")
def telephony_externalline_delete(ctx: Ctx, p: dict[str, Any]) -> Any:
    line = _existing_line(ctx, p)
    del ctx.state.external_lines[line["ID"]]
    return []


# --------------------------------------------------------------------------------------------
# Click-to-call: a user clicks a number in the CRM (Helper::startCall, REFERENCE 4.7)


def _caller_app(state: State, line_number: str, client_id: str | None) -> str:
    """Whose outgoing line the click uses: the named app, the owner of the line, else the first
    app (then outbound webhook) subscribed to ONEXTERNALCALLSTART."""
    handlers = events.handlers_for(state, "ONEXTERNALCALLSTART")
    if not handlers:
        raise RestError("Outgoing line is not found", "LINE_NOT_FOUND")
    if client_id is not None:
        if client_id != "webhook" and client_id not in state.apps:
            raise ValueError(f"no app with client_id {client_id}")
        return client_id
    if line_number:
        owners = sorted(
            (line["ID"], line["APP_KEY"])
            for line in state.external_lines.values()
            if line["NUMBER"] == line_number
        )
        if owners:
            return str(owners[0][1])
    apps = [r["CLIENT_ID"] for r in handlers if r["CLIENT_ID"]]
    return str(apps[0]) if apps else "webhook"


def start_call(
    state: State,
    *,
    user_id: int,
    phone_number: str,
    line_number: str | None = None,
    entity_type: str | None = None,
    entity_id: int | None = None,
    crm_create: bool | None = None,
    client_id: str | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """Register the outgoing call as the portal (exactly what register TYPE=1 would do), then
    fire ONEXTERNALCALLSTART with its CALL_ID. Returns (register result, delivery ids)."""
    line_number = str(line_number or "").strip()
    app_key = _caller_app(state, line_number, client_id)
    line = find_line(state, app_key, line_number) if line_number else None
    if crm_create is None:
        crm_create = line is None or line["CRM_AUTO_CREATE"] == "Y"
    etype = str(entity_type or "").upper().removeprefix("CRM_")
    app = state.apps.get(app_key)
    params: dict[str, Any] = {
        "USER_ID": user_id,
        "PHONE_NUMBER": phone_number,
        "TYPE": 1,
        "LINE_NUMBER": line_number,
        "CRM_CREATE": 1 if crm_create else 0,
        "CRM_ENTITY_TYPE": etype,
        "CRM_ENTITY_ID": entity_id,
        "SHOW": 0,
    }
    result = register_call(
        state,
        params,
        app_key=app_key,
        auth_mode="portal",
        app_id=None if app is None else app["APP_ID"],
        registered_by="portal",
    )
    data = {
        "PHONE_NUMBER": phone_number,
        "PHONE_NUMBER_INTERNATIONAL": international_phone(phone_number),
        "EXTENSION": phone_extension(phone_number),
        "USER_ID": user_id,
        "CALL_LIST_ID": 0,
        "LINE_NUMBER": line_number,
        "IS_MOBILE": False,
        "CALL_ID": result["CALL_ID"],
        "CRM_ENTITY_TYPE": result["CRM_ENTITY_TYPE"] or "",
        "CRM_ENTITY_ID": result["CRM_ENTITY_ID"],
    }
    return result, events.fire(state, "ONEXTERNALCALLSTART", data)
