"""REST events: the handler table (``event.bind`` rows and outbound webhooks) and firing.

Both kinds of handler are rows of one table, like Bitrix24's ``b_rest_event``: an app binding
has the app's client id, an outbound webhook (a handler URL + events an admin picks in the UI)
has none and carries its own application token. Firing an event queues one delivery per
matching online row (``delivery.py`` sends it):

    event=ONCRMCONTACTUPDATE&event_handler_id=3&data[FIELDS][ID]=12&ts=1773236988
    &auth[access_token]=...&auth[expires_in]=3600&auth[scope]=crm&auth[domain]=...
    &auth[server_endpoint]=...&auth[status]=L&auth[client_endpoint]=...&auth[member_id]=...
    &auth[refresh_token]=...&auth[application_token]=...

Outbound webhooks (and ONAPPUNINSTALL, sent with ``sendAuth=false``) get only ``domain``,
``server_endpoint``, ``client_endpoint``, ``member_id`` and ``application_token``
(REFERENCE 4.7, pitfall 13). Offline bindings (``event_type=offline``) are stored but nothing
is queued for them (``event.offline.get`` is not emulated).

Callers hold the state lock.
"""

from __future__ import annotations

import copy
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .core import RestError, now

if TYPE_CHECKING:
    from .state import State

# Event name -> the scope an app needs to bind it (None: no scope, like Bitrix24's global ones).
KNOWN_EVENTS: dict[str, str | None] = {
    "ONEXTERNALCALLSTART": "telephony",
    "ONEXTERNALCALLBACKSTART": "telephony",
    **{
        f"ONCRM{entity}{action}": "crm"
        for entity in ("CONTACT", "COMPANY", "LEAD", "DEAL")
        for action in ("ADD", "UPDATE", "DELETE")
    },
    "ONAPPINSTALL": None,
    "ONAPPUNINSTALL": None,
}


def check_handler_url(url: str) -> None:
    """``HandlerHelper::checkCallback``: a host with a dot in it, http or https."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.find(".") <= 0:
        raise RestError("Wrong handler URL", "ERROR_WRONG_HANDLER_URL")
    if parts.scheme not in ("http", "https"):
        raise RestError("Unsupported handler protocol", "ERROR_UNSUPPORTED_PROTOCOL")


def _next_handler_id(state: State) -> int:
    # IDs never repeat, also across reset() (which rebuilds the counters): handlers survive it.
    ids = [0, state.counters.get("event_handler", 0), *state.event_handlers]
    state.counters["event_handler"] = max(ids) + 1
    return state.counters["event_handler"]


def _add_row(
    state: State,
    event: str,
    handler: str,
    *,
    client_id: str | None = None,
    user_id: int = 0,
    offline: bool = False,
    outbound_webhook_id: int | None = None,
) -> dict[str, Any]:
    hid = _next_handler_id(state)
    row: dict[str, Any] = {
        "ID": hid,
        "EVENT": event,
        "HANDLER": handler,
        "CLIENT_ID": client_id,
        "USER_ID": user_id,
        "OFFLINE": 1 if offline else 0,
        "CONNECTOR_ID": "",
        "OUTBOUND_WEBHOOK_ID": outbound_webhook_id,
        "DATE_CREATE": now(),
    }
    state.event_handlers[hid] = row
    return row


def app_rows(state: State, client_id: str) -> list[dict[str, Any]]:
    rows = [r for r in state.event_handlers.values() if r["CLIENT_ID"] == client_id]
    return sorted(rows, key=lambda r: r["ID"])


def bind(
    state: State, client_id: str, event: str, handler: str, *, user_id: int, offline: bool
) -> dict[str, Any]:
    """Add an app binding; the same app+event+handler+user again is refused (``checkUniq``)."""
    for row in app_rows(state, client_id):
        if (row["EVENT"], row["HANDLER"], row["USER_ID"]) == (event, handler, user_id):
            raise RestError("Unable to set event handler: Handler already binded", "ERROR_CORE")
    return _add_row(state, event, handler, client_id=client_id, user_id=user_id, offline=offline)


def unbind(state: State, client_id: str, event: str, handler: str, user_id: int | None) -> int:
    doomed = [
        r["ID"]
        for r in app_rows(state, client_id)
        if r["EVENT"] == event
        and r["HANDLER"] == handler
        and (user_id is None or r["USER_ID"] == user_id)
    ]
    for hid in doomed:
        del state.event_handlers[hid]
    return len(doomed)


def remove_app_handlers(state: State, client_id: str) -> int:
    doomed = [r["ID"] for r in app_rows(state, client_id)]
    for hid in doomed:
        del state.event_handlers[hid]
    return len(doomed)


# Outbound webhooks ----------------------------------------------------------------------------


def add_outbound_webhook(state: State, handler: str, events: list[str]) -> dict[str, Any]:
    check_handler_url(handler)
    names = [str(e).upper() for e in events]
    if not names:
        raise ValueError("an outbound webhook needs at least one event")
    unknown = [n for n in names if n not in KNOWN_EVENTS]
    if unknown:
        raise ValueError(f"unknown events {unknown}; known: {sorted(KNOWN_EVENTS)}")
    hook_id = max([0, state.counters.get("outbound_webhook", 0), *state.outbound_webhooks]) + 1
    state.counters["outbound_webhook"] = hook_id
    hook: dict[str, Any] = {
        "ID": hook_id,
        "HANDLER": handler,
        "EVENTS": list(dict.fromkeys(names)),
        "APPLICATION_TOKEN": secrets.token_hex(16),
        "HANDLER_IDS": {},
        "DATE_CREATE": now(),
    }
    for name in hook["EVENTS"]:
        row = _add_row(state, name, handler, outbound_webhook_id=hook_id)
        hook["HANDLER_IDS"][name] = row["ID"]
    state.outbound_webhooks[hook_id] = hook
    return hook


def delete_outbound_webhook(state: State, hook_id: int) -> bool:
    hook = state.outbound_webhooks.pop(hook_id, None)
    if hook is None:
        return False
    for hid in [r["ID"] for r in state.event_handlers.values()]:
        if state.event_handlers[hid]["OUTBOUND_WEBHOOK_ID"] == hook_id:
            del state.event_handlers[hid]
    return True


# Firing ---------------------------------------------------------------------------------------


def reduced_auth(state: State, application_token: str) -> dict[str, Any]:
    return {
        "domain": state.domain,
        "server_endpoint": f"{state.base_url}/oauth/rest/",
        "client_endpoint": f"{state.base_url}/rest/",
        "member_id": state.member_id,
        "application_token": application_token,
    }


def app_auth(state: State, app: dict[str, Any], user_id: int | None = None) -> dict[str, Any]:
    """A fresh token pair of the app, as every app event carries (REFERENCE 4.7).

    With ``user_id`` (an SMS provider's handler call) the tokens act as that user and the
    block says so in ``user_id``, after ``member_id`` as in an OAuth token answer."""
    tokens = state.issue_tokens(app["CLIENT_ID"], user_id)
    auth: dict[str, Any] = {
        "access_token": tokens["access_token"],
        "expires_in": state.token_ttl,
        "scope": ",".join(app["SCOPES"]),
        "domain": state.domain,
        "server_endpoint": f"{state.base_url}/oauth/rest/",
        "status": "L",
        "client_endpoint": f"{state.base_url}/rest/",
        "member_id": state.member_id,
    }
    if user_id is not None:
        auth["user_id"] = int(user_id)
    auth["refresh_token"] = tokens["refresh_token"]
    auth["application_token"] = app["APPLICATION_TOKEN"]
    return auth


def handlers_for(state: State, event: str) -> list[dict[str, Any]]:
    """Online rows that would receive ``event`` (installed apps and existing webhooks)."""
    rows = []
    for row in sorted(state.event_handlers.values(), key=lambda r: r["ID"]):
        if row["EVENT"] != event or row["OFFLINE"]:
            continue
        if row["OUTBOUND_WEBHOOK_ID"] is not None:
            if row["OUTBOUND_WEBHOOK_ID"] in state.outbound_webhooks:
                rows.append(row)
            continue
        app = state.apps.get(row["CLIENT_ID"] or "")
        if app is not None and app.get("INSTALLED", True):
            rows.append(row)
    return rows


def fire(
    state: State,
    event: str,
    data: dict[str, Any],
    *,
    client_id: str | None = None,
    include_outbound: bool = True,
    send_auth: bool = True,
) -> list[int]:
    """Queue ``event`` for its handlers; returns the delivery ids.

    ``client_id`` limits app handlers to that app; ``send_auth=False`` gives app handlers the
    reduced auth block too (events registered with ``sendAuth=false``, e.g. ONAPPUNINSTALL).
    """
    event = event.upper()
    ids: list[int] = []
    for row in handlers_for(state, event):
        hook_id = row["OUTBOUND_WEBHOOK_ID"]
        if hook_id is not None:
            if not include_outbound:
                continue
            kind = "outbound_webhook"
            auth = reduced_auth(state, state.outbound_webhooks[hook_id]["APPLICATION_TOKEN"])
        else:
            if client_id is not None and row["CLIENT_ID"] != client_id:
                continue
            kind = "app"
            app = state.apps[row["CLIENT_ID"]]
            auth = (
                app_auth(state, app) if send_auth else reduced_auth(state, app["APPLICATION_TOKEN"])
            )
        ids.append(
            queue_delivery(
                state,
                handler=row["HANDLER"],
                kind=kind,
                client_id=row["CLIENT_ID"],
                auth=auth,
                event=event,
                event_handler_id=row["ID"],
                outbound_webhook_id=hook_id,
                data=copy.deepcopy(data),
            )
        )
    return ids


def queue_delivery(
    state: State,
    *,
    handler: str,
    kind: str,
    client_id: str | None,
    auth: dict[str, Any],
    event: str | None = None,
    event_handler_id: int | None = None,
    outbound_webhook_id: int | None = None,
    data: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Record one POST for the queue and hand it over; returns the delivery id.

    An event has ``event``/``data``; any other call (an SMS provider's handler) gives its
    top-level ``payload`` (``ts`` and ``auth`` are added when it is sent)."""
    state.delivery_seq += 1
    record: dict[str, Any] = {
        "id": state.delivery_seq,
        "event": event,
        "event_handler_id": event_handler_id,
        "handler": handler,
        "kind": kind,
        "client_id": client_id,
        "outbound_webhook_id": outbound_webhook_id,
        "data": data,
        "auth": auth,
        **({} if payload is None else {"payload": payload}),
        **(extra or {}),
        "state": "queued",
        "queued_at": now(),
        "sent_at": None,
        "finished_at": None,
        "duration": None,
        "ts": None,
        "fields": None,
        "status_code": None,
        "error": None,
        "response": None,
    }
    state.deliveries.append(record)
    state.delivery_queue.put(record)
    return int(record["id"])


def fire_crm(state: State, etype: str, action: str, entity_id: int) -> list[int]:
    """ONCRM{CONTACT|COMPANY|LEAD|DEAL}{ADD|UPDATE|DELETE} with ``data[FIELDS][ID]``."""
    return fire(state, f"ONCRM{etype}{action}", {"FIELDS": {"ID": entity_id}})
