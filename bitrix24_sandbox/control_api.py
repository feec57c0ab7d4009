"""HTTP control API under ``/_sandbox/`` for tests and the demo (JSON in/out, no auth).

Routes (all JSON):
    GET    state                         summary: counters, limiter, faults, switches
    GET    dump                          the whole state as JSON
    POST   save                          write the state file now (if configured)
    POST   reset                         {"seed": true}  back to seed data; credentials, event
                                         bindings and outbound webhooks survive
    GET    requests?method=&in_batch=    request log;  DELETE requests clears it
    GET    faults / POST faults / DELETE faults
           POST body: {"kind": "down", "mode": "http503"|"reset", "method": null}
                      {"kind": "slow", "delay_ms": 800, "method": null}
                      {"kind": "fail_next", "count": 2, "method": "crm.lead.add"}
    POST   rate_limit                    {"drain_per_second": 2, "bucket_size": 50} (null = off)
    POST   latency                       {"connect_ms": 150, "request_ms": 50}: added delay per new
                                         connection (before its TLS handshake) and per REST
                                         request; state shows connections_opened and
                                         rest_connections (connections that carried /rest/)
    POST   expire_tokens                 {"access_token": optional}
    POST   webhook_telephony_denied      {"denied": true}
    POST   moved                         {"url": "https://localhost:8443"}: /rest/ requests to
                                         any other host answer 302 there; {"url": null} undoes
    POST   operation_limit               {"method": "crm.deal.list", "seconds": 5 | null}
    POST   users                         user fields -> created user
    POST   users/{id}/deactivate | users/{id}/activate
    POST   users/{id}/timeman            {"status": "PAUSED"}
    POST   stages                        {"category_id": 1, "status_id": "C1:X", "name": "X", ...}
    POST   stages/delete                 {"status_id": "C1:NEGOTIATION", "category_id": 1}
                                         or {"entity_id": "STATUS", "status_id": "JUNK"}
    POST   categories/delete             {"id": 1}
    POST   contacts                      contact fields -> {"id": N}
    POST   entities/{type}               fields -> {"id": N}   (type: contact|company|lead|deal)
    POST   entities/{type}/{id}?user_id= fields to update (crm.*.update semantics) -> {"ok"}
    DELETE entities/{type}/{id}          -> {"ok"}   (add/update/delete fire ONCRM{TYPE}{ACTION})
    GET    entities/{type}[/{id}]        legacy rows incl. PHONE
    GET    calls                         {"active": [...], "finished": [...],
                                          "registrations": [...]}  (every register, by whom)
    POST   click_to_call                 {"user_id": 5, "phone_number": "+48600111222",
                                          "line_number", "entity_type", "entity_id",
                                          "crm_create", "client_id", "timeout": 30}
                                         -> {"call_id", "call", "drained", "deliveries"}: the portal
                                         registers the call, then ONEXTERNALCALLSTART
    GET    external_lines                all lines of all apps
    POST   send_sms                      {"code": "provider1", "phone_number": "+48600111222",
                                          "text": "Hello", "user_id": 1, "module_id": "bizproc"
                                          | "crm", "entity_type", "entity_id", "client_id",
                                          "timeout": 30} -> {"message_id", "message", "drained",
                                          "deliveries"}: the message POSTed to the HANDLER
    GET    sms_senders                   providers of all apps (messageservice.sender.add)
    GET    sms_messages                  messages sent through them, with STATUS_HISTORY
    GET    events/handlers               event.bind rows and outbound-webhook rows
    GET    events/deliveries?event=      delivery log;  DELETE events/deliveries clears it
    POST   events/wait                   {"timeout": 10} -> {"drained", "pending",
                                          "deliveries"} once the event queue is empty
    GET    outbound_webhooks / POST outbound_webhooks {"handler": URL, "events": [...]}
                                         -> {"id", "application_token", "handler_ids", ...}
    DELETE outbound_webhooks/{id}
    POST   apps/{client_id}/uninstall    {"clean": false} -> ONAPPUNINSTALL, then the app's
                                         bindings, SMS providers, lines and tokens are removed
    GET    activities | notifications | tasks | triggers | comments | records
    GET    files/{id}                    metadata of a stored recording
    GET    users                         all users (raw)
    POST   categories                    {"name": "Leasing", "sort": 300} -> pipeline + 3 stages
    POST   webhooks                      {"user_id": 1, "scopes": [...]} -> {"url": ...}
    POST   apps                          {"scopes": [...], "user_id": 1} -> app + tokens
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import crm_store as S
from .core import RestError, to_bool

if TYPE_CHECKING:
    from .portal import SandboxPortal

Reply = tuple[int, Any]
Handler = Callable[["SandboxPortal", re.Match[str], dict[str, str], dict[str, Any]], Reply]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []

_ENTITY_NAMES = {"contact": "CONTACT", "company": "COMPANY", "lead": "LEAD", "deal": "DEAL"}
_COLLECTIONS = ("activities", "notifications", "tasks", "comments", "records")


def route(verb: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        ROUTES.append((verb, re.compile(f"^{pattern}$"), func))
        return func

    return register


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("control API expects a JSON object")
    return data


def _not_found(text: str) -> Reply:
    return 404, {"error": "NOT_FOUND", "error_description": text}


def handle(portal: SandboxPortal, http_method: str, path: str, query: str, raw: bytes) -> Reply:
    target = path[len("/_sandbox") :].strip("/")
    qs = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        body = _body(raw) if http_method in ("POST", "PUT", "PATCH", "DELETE") else {}
        for verb, pattern, func in ROUTES:
            match = pattern.match(target)
            if match and verb == http_method:
                return func(portal, match, qs, body)
    except (ValueError, KeyError, TypeError) as exc:
        return 400, {"error": "BAD_CONTROL_REQUEST", "error_description": str(exc)}
    except RestError as exc:
        return exc.status, exc.payload()
    return _not_found(f"unknown control route {http_method} {target}")


# State ----------------------------------------------------------------------------------------


@route("GET", "state")
def _state(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, portal.summary()


@route("GET", "dump")
def _dump(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, portal.state.to_json()


@route("POST", "save")
def _save(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"saved": portal.save_state()}


@route("POST", "reset")
def _reset(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.reset(seed=body.get("seed"))
    return 200, {"ok": True}


@route("GET", "requests")
def _requests(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    flag = qs.get("in_batch")
    in_batch = None if flag is None else bool(to_bool(flag))
    return 200, {"requests": portal.state.query_requests(qs.get("method"), in_batch)}


@route("DELETE", "requests")
def _clear_requests(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        portal.state.requests.clear()
    return 200, {"ok": True}


# Faults, limits, switches -----------------------------------------------------------------------


@route("GET", "faults")
def _faults(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        return 200, {"faults": list(portal.state.faults)}


@route("POST", "faults")
def _set_fault(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"fault": portal.set_fault(**body)}


@route("DELETE", "faults")
def _clear_faults(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.clear_faults()
    return 200, {"ok": True}


@route("POST", "rate_limit")
def _rate_limit(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.set_rate_limit(
        body.get("drain_per_second"), body.get("bucket_size"), body.get("reset_counter", True)
    )
    return 200, {"rate_limit": portal.state.rate.info()}


@route("POST", "latency")
def _latency(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.set_latency(body.get("connect_ms"), body.get("request_ms"))
    return 200, {"latency": dict(portal.state.latency)}


@route("POST", "expire_tokens")
def _expire(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"expired": portal.state.expire_tokens(body.get("access_token"))}


@route("POST", "webhook_telephony_denied")
def _deny_telephony(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        portal.state.webhook_telephony_denied = bool(body.get("denied", True))
        return 200, {"denied": portal.state.webhook_telephony_denied}


@route("POST", "moved")
def _moved(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    try:
        portal.set_moved(body.get("url"))
    except ValueError as exc:
        return 400, {"error": "invalid_request", "error_description": str(exc)}
    return 200, {"moved_to": portal.state.moved_to}


@route("POST", "operation_limit")
def _op_limit(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.set_operation_time_limit(str(body["method"]), body.get("seconds"))
    with portal.state.lock:
        return 200, {"operation_limits": dict(portal.state.op_limits)}


# Users, pipelines -------------------------------------------------------------------------------


@route("GET", "users")
def _users(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        users = portal.state.users
        return 200, {"users": [users[k] for k in sorted(users)]}


@route("POST", "users")
def _add_user(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"user": portal.add_user(**body)}


@route("POST", r"users/(\d+)/(deactivate|activate|timeman)")
def _user_action(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    uid, action = int(m.group(1)), m.group(2)
    if action == "deactivate":
        return 200, {"user": portal.deactivate_user(uid)}
    if action == "activate":
        return 200, {"user": portal.activate_user(uid)}
    return 200, {"user": portal.set_timeman_status(uid, str(body["status"]))}


@route("POST", "stages")
def _add_stage(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"stage": portal.add_stage(**body)}


@route("POST", "stages/delete")
def _delete_stage(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"deleted": portal.delete_stage(**body)}


@route("POST", "categories")
def _add_category(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"category": portal.add_category(**body)}


@route("POST", "categories/delete")
def _delete_category(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"deleted": portal.delete_category(int(body["id"]))}


# CRM data -------------------------------------------------------------------------------------


@route("POST", "contacts")
def _add_contact(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"id": portal.add_entity("CONTACT", body)}


@route("POST", r"entities/(\w+)")
def _add_entity(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    etype = _ENTITY_NAMES.get(m.group(1).lower())
    if etype is None:
        return _not_found(f"unknown entity type {m.group(1)}")
    return 200, {"id": portal.add_entity(etype, body)}


def _entity_type(name: str) -> str:
    etype = _ENTITY_NAMES.get(name.lower())
    if etype is None:
        raise RestError(f"unknown entity type {name}", "NOT_FOUND", 404)
    return etype


@route("POST", r"entities/(\w+)/(\d+)")
def _update_entity(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    user_id = int(qs.get("user_id") or 1)
    portal.update_entity(_entity_type(m.group(1)), int(m.group(2)), body, user_id)
    return 200, {"ok": True}


@route("DELETE", r"entities/(\w+)/(\d+)")
def _delete_entity(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.delete_entity(_entity_type(m.group(1)), int(m.group(2)))
    return 200, {"ok": True}


@route("GET", r"entities/(\w+)(?:/(\d+))?")
def _entities(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    etype = _ENTITY_NAMES.get(m.group(1).lower())
    if etype is None:
        return _not_found(f"unknown entity type {m.group(1)}")
    with portal.state.lock:
        rows = portal.state.entities[etype]
        ufs = portal.state.uf_fields.get(etype, {})
        if m.group(2):
            rec = rows.get(int(m.group(2)))
            return (200, S.legacy_row(etype, rec, None, ufs)) if rec else _not_found("no entity")
        return 200, {"items": [S.legacy_row(etype, rows[k], None, ufs) for k in sorted(rows)]}


@route("GET", "calls")
def _calls(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, portal.calls()


@route("POST", "click_to_call")
def _click_to_call(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    entity_id = body.get("entity_id")
    return 200, portal.click_to_call(
        int(body["user_id"]),
        str(body["phone_number"]),
        body.get("line_number"),
        body.get("entity_type"),
        None if entity_id in (None, "") else int(entity_id),
        crm_create=body.get("crm_create"),
        client_id=body.get("client_id"),
        timeout=float(body.get("timeout", 30)),
    )


@route("POST", "send_sms")
def _send_sms(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    entity_id = body.get("entity_id")
    return 200, portal.send_sms(
        str(body["code"]),
        str(body["phone_number"]),
        str(body["text"]),
        user_id=int(body.get("user_id", 1)),
        module_id=str(body.get("module_id") or "bizproc"),
        entity_type=body.get("entity_type"),
        entity_id=None if entity_id in (None, "") else int(entity_id),
        client_id=body.get("client_id"),
        timeout=float(body.get("timeout", 30)),
    )


@route("GET", "sms_senders")
def _sms_senders(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"sms_senders": portal.sms_senders()}


@route("GET", "sms_messages")
def _sms_messages(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"sms_messages": portal.sms_messages()}


@route("GET", "external_lines")
def _external_lines(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"external_lines": portal.external_lines()}


@route("GET", "triggers")
def _triggers(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        return 200, {"triggers": list(portal.state.triggers)}


@route("GET", "(" + "|".join(_COLLECTIONS) + ")")
def _collection(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        coll = getattr(portal.state, m.group(1))
        return 200, {m.group(1): [coll[k] for k in sorted(coll)]}


@route("GET", r"files/(\d+)")
def _file(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    with portal.state.lock:
        rec = portal.state.records.get(int(m.group(1)))
    return (200, rec) if rec else _not_found("no such file")


# Credentials ----------------------------------------------------------------------------------


@route("POST", "webhooks")
def _add_webhook(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"url": portal.add_webhook(int(body.get("user_id", 1)), body.get("scopes"))}


@route("POST", "apps")
def _add_app(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, portal.add_oauth_app(body.get("scopes"), int(body.get("user_id", 1)))


@route("POST", r"apps/([^/]+)/uninstall")
def _uninstall_app(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    clean = bool(to_bool(body.get("clean", False)))
    return 200, portal.uninstall_app(m.group(1), clean, float(body.get("timeout", 10)))


# Events -----------------------------------------------------------------------------------------


@route("GET", "events/handlers")
def _event_handlers(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"handlers": portal.event_handlers()}


@route("GET", "events/deliveries")
def _deliveries(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"deliveries": portal.deliveries(qs.get("event"))}


@route("DELETE", "events/deliveries")
def _clear_deliveries(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    portal.clear_deliveries()
    return 200, {"ok": True}


@route("POST", "events/wait")
def _wait_deliveries(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    queue = portal.state.delivery_queue
    drained = queue.wait(None, float(body.get("timeout", 10)))
    return 200, {"drained": drained, "pending": queue.pending(), "deliveries": portal.deliveries()}


@route("GET", "outbound_webhooks")
def _outbound_webhooks(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    return 200, {"outbound_webhooks": portal.outbound_webhooks()}


@route("POST", "outbound_webhooks")
def _add_outbound_webhook(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    events = body.get("events")
    if not isinstance(events, list):
        raise ValueError('"events" must be a list of event names')
    hook = portal.add_outbound_webhook(str(body["handler"]), events)
    return 200, {
        "id": hook["ID"],
        "application_token": hook["APPLICATION_TOKEN"],
        "handler": hook["HANDLER"],
        "events": hook["EVENTS"],
        "handler_ids": hook["HANDLER_IDS"],
    }


@route("DELETE", r"outbound_webhooks/(\d+)")
def _delete_outbound_webhook(
    portal: SandboxPortal, m: re.Match[str], qs: dict[str, str], body: dict[str, Any]
) -> Reply:
    if not portal.delete_outbound_webhook(int(m.group(1))):
        return _not_found("no such outbound webhook")
    return 200, {"deleted": True}
