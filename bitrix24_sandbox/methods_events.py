"""``event.bind`` / ``event.get`` / ``event.unbind`` / ``events`` (rest ``Api\\Event``).

Application context only: a webhook call gets 403 ``WRONG_AUTH_TYPE``. Parameter names are
case-insensitive (the method upper-cases them), event names are stored upper-case.
Bindings belong to the calling app (its client id); see ``events.py`` for the delivery.
"""

from __future__ import annotations

from typing import Any

from . import events
from .core import Ctx, RestError, rest_method, to_int, upper_keys


def _app(ctx: Ctx) -> dict[str, Any]:
    if ctx.auth.mode != "oauth" or not ctx.auth.client_id:
        raise RestError(
            "Current authorization type is denied for this method", "WRONG_AUTH_TYPE", 403
        )
    return ctx.state.apps[ctx.auth.client_id]


def _is_admin(ctx: Ctx) -> bool:
    user = ctx.state.users.get(ctx.auth.user_id) or {}
    return bool(user.get("ADMIN"))


def _access_denied(detail: str) -> RestError:
    return RestError(f"Access denied! {detail}", "ACCESS_DENIED", 403)


def _null_argument(name: str) -> RestError:
    return RestError(
        f"Argument '{name}' is null or empty", "ERROR_ARGUMENT", 400, {"argument": name}
    )


def _event_type(up: dict[str, Any]) -> str:
    kind = str(up.get("EVENT_TYPE") or "").lower()
    if kind and kind not in ("online", "offline"):
        raise RestError(
            "Value must be one of {online|offline}",
            "ERROR_ARGUMENT",
            400,
            {"argument": "EVENT_TYPE"},
        )
    return kind or "online"


@rest_method("event.bind", None)
def event_bind(ctx: Ctx, p: dict[str, Any]) -> Any:
    app = _app(ctx)
    up = upper_keys(p)
    name = str(up.get("EVENT") or "").upper()
    handler = str(up.get("HANDLER") or "")
    user_id = to_int(up.get("AUTH_TYPE"), 0) or 0
    admin = _is_admin(ctx)
    if user_id > 0:
        if not admin and user_id != ctx.auth.user_id:
            raise _access_denied(
                "Event binding with AUTH_TYPE requires administrator access rights"
            )
    elif not admin:
        user_id = ctx.auth.user_id  # a non-admin's handlers always run as that user
    if not name:
        raise _null_argument("EVENT")
    offline = _event_type(up) == "offline"
    if offline:
        if not admin:
            raise _access_denied("Offline events binding requires administrator access rights")
        handler, user_id = "", 0
    elif not handler:
        raise _null_argument("HANDLER")
    if handler:
        events.check_handler_url(handler)
    if name not in events.KNOWN_EVENTS:
        raise RestError("Event not found", "ERROR_EVENT_NOT_FOUND")
    scope = events.KNOWN_EVENTS[name]
    if scope is not None and scope not in app["SCOPES"]:
        raise RestError("Event not found", "ERROR_EVENT_NOT_FOUND")  # outside the app's scopes
    events.bind(ctx.state, app["CLIENT_ID"], name, handler, user_id=user_id, offline=offline)
    return True


@rest_method("event.get", None)
def event_get(ctx: Ctx, p: dict[str, Any]) -> Any:
    app = _app(ctx)
    admin = _is_admin(ctx)
    result: list[dict[str, Any]] = []
    for row in events.app_rows(ctx.state, app["CLIENT_ID"]):
        if not admin and row["USER_ID"] != ctx.auth.user_id:
            continue
        if row["OFFLINE"]:
            result.append(
                {"event": row["EVENT"], "connector_id": row["CONNECTOR_ID"], "offline": 1}
            )
        else:
            result.append(
                {
                    "event": row["EVENT"],
                    "handler": row["HANDLER"],
                    "auth_type": str(row["USER_ID"]),
                    "offline": 0,
                }
            )
    return result


@rest_method("event.unbind", None)
def event_unbind(ctx: Ctx, p: dict[str, Any]) -> Any:
    app = _app(ctx)
    up = upper_keys(p)
    name = str(up.get("EVENT") or "").upper()
    handler = str(up.get("HANDLER") or "")
    if not name:
        raise _null_argument("EVENT")
    admin = _is_admin(ctx)
    user_id: int | None = None
    if _event_type(up) == "offline":
        if not admin:
            raise _access_denied("Offline events unbinding requires administrator access rights")
        handler = ""
    else:
        if not handler:
            raise _null_argument("HANDLER")
        if "AUTH_TYPE" in up:
            user_id = to_int(up.get("AUTH_TYPE"), 0) or 0
            if not admin and user_id != ctx.auth.user_id:
                raise _access_denied(
                    "Event unbinding with AUTH_TYPE requires administrator access rights"
                )
        elif not admin:
            user_id = ctx.auth.user_id
    return {"count": events.unbind(ctx.state, app["CLIENT_ID"], name, handler, user_id)}


@rest_method("events", None)
def events_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    app = _app(ctx)
    up = upper_keys(p)
    if up.get("SCOPE") not in (None, ""):
        scopes: set[str | None] = {str(up["SCOPE"])}
    elif up.get("FULL"):
        scopes = set(events.KNOWN_EVENTS.values())
    else:
        scopes = {None, *app["SCOPES"]}
    return [name for name, scope in events.KNOWN_EVENTS.items() if scope in scopes]
