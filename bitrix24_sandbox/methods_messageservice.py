"""``messageservice.*``: SMS providers of apps (rest ``MessageService\\RestService``).

An app registers a provider (``messageservice.sender.add``: CODE, TYPE=SMS, HANDLER, NAME,
DESCRIPTION); when a user sends an SMS through it (the CRM card, a workflow or an automation
rule; in the sandbox ``portal.send_sms``) the portal creates the message and POSTs it to the
HANDLER through the event queue (``application/x-www-form-urlencoded``, PHP-style keys)::

    type=SMS&code=provider1&message_id=65575980fa531ac284c2ee68f81ebebd&message_to=+48600111222
    &message_body=Hello&properties[phone_number]=+48600111222&properties[message_text]=Hello
    &module_id=crm&bindings[0][OWNER_TYPE_ID]=3&bindings[0][OWNER_ID]=12&ts=1773236988
    &auth[access_token]=...&auth[member_id]=...&auth[user_id]=5&auth[application_token]=...

(``module_id=bizproc`` sends ``workflow_id``, ``document_id[0..2]`` and ``document_type[0..2]``
instead of ``bindings``). The app reports delivery with ``messageservice.message.status.update``
(CODE, MESSAGE_ID, STATUS). Docs: b24restdocs ``api-reference/messageservice/`` (sender-add,
-list, -update, -delete, message-status-update).

Every method needs an application context (a webhook gets 403 ``ACCESS_DENIED``) and, except
a status update of the caller's own message, an administrator. Parameter names are
case-insensitive (``array_change_key_case``). Providers belong to the calling app (key
``client_id|CODE``, Bitrix24's MESSAGE_FROM of their messages); uninstalling the app removes
them (``onRestAppDelete``).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from . import events
from .core import Ctx, RestError, now, rest_method, upper_keys
from .crm_store import ENTITY_TYPE_IDS

if TYPE_CHECKING:
    from .state import State

SCOPE = "messageservice"
SENDER_TYPES = ("SMS",)
# Sender\Sms\Rest::resolveStatus: exactly these (lower-case) names, anything else is refused.
STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")
MODULES = ("crm", "bizproc")
# Workflow documents of CRM entities (CCrmBizProcHelper / bizproc document types).
DOCUMENT_CLASSES = {
    "LEAD": "CCrmDocumentLead",
    "DEAL": "CCrmDocumentDeal",
    "CONTACT": "CCrmDocumentContact",
    "COMPANY": "CCrmDocumentCompany",
}
_CODE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)


def _validation(text: str) -> RestError:
    return RestError(text, "ERROR_SENDER_VALIDATION_FAILURE")


def _php_empty(value: Any) -> bool:
    """PHP's ``empty()``: null, "", "0", 0, false and empty arrays."""
    return value is None or value is False or value in ("", "0", 0) or value in ([], {})


def _app(ctx: Ctx) -> dict[str, Any]:
    """``AccessException("Application context required")`` outside an app (REFERENCE 1.4:
    an AccessException reads "Access denied!" + its detail, HTTP 403)."""
    if ctx.auth.mode != "oauth" or not ctx.auth.client_id:
        raise RestError("Access denied! Application context required", "ACCESS_DENIED", 403)
    return ctx.state.apps[ctx.auth.client_id]


def _check_admin(ctx: Ctx) -> None:
    user = ctx.state.users.get(ctx.auth.user_id) or {}
    if not user.get("ADMIN"):
        raise RestError("Access denied!", "ACCESS_DENIED", 403)


def sender_key(client_id: str, code: str) -> str:
    return f"{client_id}|{code}"


def _validate_code(code: Any) -> str:
    if _php_empty(code):
        raise _validation("Empty sender code!")
    if not isinstance(code, (str, int)) or not _CODE.match(str(code)):
        raise _validation("Wrong sender code!")
    return str(code)


def app_senders(state: State, client_id: str) -> list[dict[str, Any]]:
    rows = [s for s in state.sms_senders.values() if s["CLIENT_ID"] == client_id]
    return sorted(rows, key=lambda s: s["ID"])


def remove_app_senders(state: State, client_id: str) -> int:
    """``RestService::onRestAppDelete``: an uninstalled app's providers are deleted."""
    doomed = [sender_key(s["CLIENT_ID"], s["CODE"]) for s in app_senders(state, client_id)]
    for key in doomed:
        del state.sms_senders[key]
    return len(doomed)


def _next_sender_id(state: State) -> int:
    # Providers survive reset() (which rebuilds the counters): their IDs never repeat.
    ids = [0, state.counters.get("sms_sender", 0), *(s["ID"] for s in state.sms_senders.values())]
    state.counters["sms_sender"] = max(ids) + 1
    return state.counters["sms_sender"]


# --------------------------------------------------------------------------------------------
# Providers


@rest_method("messageservice.sender.add", SCOPE)
def messageservice_sender_add(ctx: Ctx, p: dict[str, Any]) -> Any:
    """``RestService::addSender``: app context, admin, then ``validateSender`` (CODE, HANDLER
    via ``HandlerHelper::checkCallback``, NAME, TYPE) and one CODE per app."""
    app = _app(ctx)
    _check_admin(ctx)
    up = upper_keys(p)
    if not up:
        raise _validation("Empty data!")
    code = _validate_code(up.get("CODE"))
    handler = up.get("HANDLER")
    events.check_handler_url(handler if isinstance(handler, str) else "")
    if _php_empty(up.get("NAME")):
        raise _validation("Empty sender NAME!")
    if _php_empty(up.get("TYPE")):
        raise _validation("Empty sender message TYPE!")
    if up.get("TYPE") not in SENDER_TYPES:  # in_array(..., ['SMS'], true): case-sensitive
        raise _validation("Unknown sender message TYPE!")
    key = sender_key(app["CLIENT_ID"], code)
    if key in ctx.state.sms_senders:
        raise RestError("Sender already installed!", "ERROR_SENDER_ALREADY_INSTALLED")
    ctx.state.sms_senders[key] = {
        "ID": _next_sender_id(ctx.state),
        "CLIENT_ID": app["CLIENT_ID"],
        "APP_ID": app["APP_ID"],
        "CODE": code,
        "TYPE": up["TYPE"],
        "HANDLER": handler,
        "NAME": up["NAME"],
        "DESCRIPTION": up.get("DESCRIPTION") or "",
        "AUTHOR_ID": ctx.auth.user_id,
        "DATE_CREATE": now(),
    }
    return True


@rest_method("messageservice.sender.list", SCOPE)
def messageservice_sender_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    """``RestService::getSenderList``: the codes of the calling app's providers."""
    app = _app(ctx)
    _check_admin(ctx)
    return [s["CODE"] for s in app_senders(ctx.state, app["CLIENT_ID"])]


@rest_method("messageservice.sender.update", SCOPE)
def messageservice_sender_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    """CODE and at least one of HANDLER, NAME, DESCRIPTION (docs
    ``messageservice-sender-update.md``); a new HANDLER is checked like on add."""
    app = _app(ctx)
    _check_admin(ctx)
    up = upper_keys(p)
    if _php_empty(up.get("CODE")):
        raise RestError("CODE is required!", "ERROR_SENDER_CODE_REQUIRED")
    changes = {k: up[k] for k in ("HANDLER", "NAME", "DESCRIPTION") if not _php_empty(up.get(k))}
    if not changes:
        raise RestError(
            "At least one other parameter is required!", "ERROR_SENDER_OTHER_PARAMS_REQUIRED"
        )
    sender = ctx.state.sms_senders.get(sender_key(app["CLIENT_ID"], str(up["CODE"])))
    if sender is None:
        raise RestError("Sender not found!", "ERROR_SENDER_NOT_FOUND")
    if "HANDLER" in changes:
        handler = changes["HANDLER"]
        events.check_handler_url(handler if isinstance(handler, str) else "")
    sender.update(changes)
    return True


@rest_method("messageservice.sender.delete", SCOPE)
def messageservice_sender_delete(ctx: Ctx, p: dict[str, Any]) -> Any:
    """``RestService::deleteSender``: the calling app's provider with that CODE. Messages sent
    through it stay; status updates find them by MESSAGE_FROM, which does not need the sender."""
    app = _app(ctx)
    up = upper_keys(p)
    _check_admin(ctx)
    code = _validate_code(up.get("CODE"))
    if ctx.state.sms_senders.pop(sender_key(app["CLIENT_ID"], code), None) is None:
        raise RestError("Sender not found!", "ERROR_SENDER_NOT_FOUND")
    return True


# --------------------------------------------------------------------------------------------
# Messages


def _message_not_found() -> RestError:
    return RestError("Message not found!", "ERROR_MESSAGE_NOT_FOUND")


def record_status(message: dict[str, Any], status: str, user_id: int | None, by: str) -> bool:
    """Set the message's status; False (nothing recorded) if it already has that status."""
    if message["STATUS"] == status:
        return False
    t = now()
    message["STATUS"] = status
    message["DATE_STATUS"] = t
    message["STATUS_HISTORY"].append(status)
    message["STATUS_CHANGES"].append({"STATUS": status, "TIME": t, "USER_ID": user_id, "BY": by})
    return True


@rest_method("messageservice.message.status.update", SCOPE)
def messageservice_message_status_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    """``RestService::updateMessageStatus``: the message is looked up by MESSAGE_ID *and* this
    app's sender (``Message::loadByExternalId('rest', id, client_id|CODE)``), so another app's
    or another provider's message is "not found". Its author may update it; anyone else must
    be an administrator."""
    app = _app(ctx)
    up = upper_keys(p)
    code = _validate_code(up.get("CODE"))
    message_id = up.get("MESSAGE_ID")
    if _php_empty(message_id):
        raise _message_not_found()
    status = up.get("STATUS")
    if not isinstance(status, str) or status not in STATUSES:
        raise RestError("Message status incorrect!", "ERROR_MESSAGE_STATUS_INCORRECT")
    message = ctx.state.sms_messages.get(str(message_id))
    if message is None or message["MESSAGE_FROM"] != sender_key(app["CLIENT_ID"], code):
        raise _message_not_found()
    if message["AUTHOR_ID"] != ctx.auth.user_id:
        _check_admin(ctx)
    record_status(message, status, ctx.auth.user_id, "rest")
    return True


# --------------------------------------------------------------------------------------------
# A user sends an SMS through a provider (the portal's side; control API ``send_sms``)


def find_sender(state: State, code: str, client_id: str | None = None) -> dict[str, Any]:
    """The provider ``code`` of ``client_id``'s app, else of the first installed app (by
    registration) that has one."""
    if client_id is not None and client_id not in state.apps:
        raise ValueError(f"no app with client_id {client_id}")
    rows = sorted(
        (
            s
            for s in state.sms_senders.values()
            if s["CODE"] == code
            and (client_id is None or s["CLIENT_ID"] == client_id)
            and state.apps.get(s["CLIENT_ID"], {}).get("INSTALLED", True)
        ),
        key=lambda s: s["ID"],
    )
    if not rows:
        owner = f" of app {client_id}" if client_id is not None else ""
        raise RestError(f"Sender not found! (no provider {code!r}{owner})", "NOT_FOUND", 404)
    return rows[0]


def _workflow_id() -> str:
    # Workflow ids are PHP uniqid('', true): 14 hex digits, a dot, 8 digits.
    return f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"


def send_message(
    state: State,
    *,
    code: str,
    phone_number: str,
    text: str,
    user_id: int,
    module_id: str = "bizproc",
    entity_type: str | None = None,
    entity_id: int | None = None,
    client_id: str | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """Create the message (status ``queued``) and queue the POST to the provider's HANDLER.
    Returns (message, delivery ids). Callers hold the state lock."""
    if module_id not in MODULES:
        raise ValueError(f"module_id must be one of {MODULES}")
    if state.active_user(user_id) is None:
        raise ValueError(f"no active user {user_id}")
    etype = str(entity_type or "").upper().removeprefix("CRM_")
    if etype and etype not in ENTITY_TYPE_IDS:
        raise ValueError(f"entity_type must be one of {sorted(ENTITY_TYPE_IDS)} or None")
    if bool(etype) != (entity_id is not None):
        raise ValueError("entity_type and entity_id go together")
    sender = find_sender(state, code, client_id)
    app = state.apps[sender["CLIENT_ID"]]
    message_id = secrets.token_hex(16)
    while message_id in state.sms_messages:  # pragma: no cover - 128 random bits
        message_id = secrets.token_hex(16)

    payload: dict[str, Any] = {
        "type": sender["TYPE"],
        "code": sender["CODE"],
        "message_id": message_id,
        "message_to": phone_number,
        "message_body": text,
        "properties": {"phone_number": phone_number, "message_text": text},
        "module_id": module_id,
    }
    workflow_id: str | None = None
    if module_id == "crm":
        # CRM card: the message is bound to the entity it was sent from.
        payload["bindings"] = (
            [{"OWNER_TYPE_ID": ENTITY_TYPE_IDS[etype], "OWNER_ID": entity_id}] if etype else []
        )
    else:
        workflow_id = _workflow_id()
        payload["workflow_id"] = workflow_id
        if etype:
            document = DOCUMENT_CLASSES[etype]
            payload["document_id"] = ["crm", document, f"{etype}_{entity_id}"]
            payload["document_type"] = ["crm", document, etype]

    t = now()
    message: dict[str, Any] = {
        "MESSAGE_ID": message_id,
        "TYPE": sender["TYPE"],
        "SENDER_ID": "rest",
        "CODE": sender["CODE"],
        "CLIENT_ID": sender["CLIENT_ID"],
        "MESSAGE_FROM": sender_key(sender["CLIENT_ID"], sender["CODE"]),
        "MESSAGE_TO": phone_number,
        "MESSAGE_BODY": text,
        "AUTHOR_ID": int(user_id),
        "MODULE_ID": module_id,
        "ENTITY_TYPE": etype or None,
        "ENTITY_ID": entity_id,
        "WORKFLOW_ID": workflow_id,
        "DATE_INSERT": t,
        "STATUS": "queued",
        "DATE_STATUS": t,
        "STATUS_HISTORY": ["queued"],
        "STATUS_CHANGES": [{"STATUS": "queued", "TIME": t, "USER_ID": None, "BY": "portal"}],
        "DELIVERY_IDS": [],
    }
    state.sms_messages[message_id] = message
    delivery_id = events.queue_delivery(
        state,
        handler=str(sender["HANDLER"]),
        kind="sms",
        client_id=sender["CLIENT_ID"],
        auth=events.app_auth(state, app, int(user_id)),
        payload=payload,
        extra={"message_id": message_id, "code": sender["CODE"]},
    )
    message["DELIVERY_IDS"].append(delivery_id)
    return message, [delivery_id]
