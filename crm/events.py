"""Bitrix24 calling SIMtrix: its events, verified, stored, and worked off in the background.

Bitrix24 posts an event form-encoded with PHP-style keys (`data[FIELDS][ID]=12`,
`auth[application_token]=...`). The token is the tenant's: the OAuth application's
`application_token` (from its installation) or, for a webhook-connected tenant, the token of the
outbound webhook its admin created. A wrong token is refused with nothing done; an accepted event
is a row first, answered at once, and processed by a worker (queued when the row commits, found
again by the dispatcher if that message is lost).

What an event does is registered by the module that owns it (`event_handler`): crm handles the
CRM updates (cached lookups dropped) and the uninstallation itself; commands.dialing handles
ONEXTERNALCALLSTART.
"""

from __future__ import annotations

import hmac
import logging
import random
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.phones import InvalidPhoneNumber, phone_to_e164
from crm import client as b24
from crm.cache import cache_delete, cache_delete_entity
from crm.client import Bitrix24Client
from crm.errors import Bitrix24Error
from crm.models import Bitrix24Connection, InboundEvent
from tenants.context import tenant_country, tenant_language_active, tenant_public_url
from tenants.fanout import task_queue
from tenants.wake import tenant_wake, visit_hook

logger = logging.getLogger(__name__)

EventHandler = Callable[[InboundEvent], dict[str, Any] | None]
_HANDLERS: dict[str, EventHandler] = {}

# The entity events that change what a lookup finds, and the entity each is about.
CRM_ENTITY_EVENTS = {
    f"ONCRM{kind}{change}": kind
    for kind in ("CONTACT", "COMPANY", "LEAD")
    for change in ("ADD", "UPDATE", "DELETE")
}
# What SIMtrix binds in an OAuth-connected portal (event.bind). Adds matter too: a number that
# was "not found" a minute ago is found once a contact with it is added.
BOUND_EVENTS = ("ONEXTERNALCALLSTART", *CRM_ENTITY_EVENTS, "ONAPPUNINSTALL")
# An event not processed yet (its worker's message lost) is taken up again after this.
REQUEUE_AFTER = timedelta(seconds=30)
MAX_ATTEMPTS = 8
_KEY = re.compile(r"\[([^\[\]]*)\]")


class EventRefused(Exception):
    """Not the tenant's application token: a 401, nothing stored."""


class EventInvalid(Exception):
    """No event name: a 400, nothing stored."""


def event_handler(name: str) -> Callable[[EventHandler], EventHandler]:
    """Registers what an event does (in the worker, inside the tenant's schema)."""

    def register(handler: EventHandler) -> EventHandler:
        _HANDLERS[name.upper()] = handler
        return handler

    return register


def form_nested(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style form keys as nested dicts: `data[FIELDS][ID]=12` is data -> FIELDS -> ID.

    Lists stay dicts with their indexes as keys ("0", "1"), which is how they are addressed."""
    tree: dict[str, Any] = {}
    for key, value in items:
        head, _, rest = key.partition("[")
        path = [head] + (_KEY.findall("[" + rest) if rest else [])
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return tree


def events_token_expected(conn: Bitrix24Connection | None) -> str:
    if conn is None:
        return ""
    if conn.auth_mode == Bitrix24Connection.AuthMode.OAUTH and conn.oauth_application_token:
        return conn.oauth_application_token
    return conn.events_token


def event_receive(*, form: Iterable[tuple[str, str]], as_event: str = "") -> InboundEvent:
    """Verifies and stores one event; its work is queued when the caller's transaction commits.

    `as_event`: a post that is no event but is handled like one (a message for the SMS
    provider, crm.messageservice): stored under that name, its whole body but `auth` as data."""
    body = form_nested(form)
    auth = body.get("auth")
    token = str(auth.get("application_token") or "") if isinstance(auth, dict) else ""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    expected = events_token_expected(conn)
    now = timezone.now()
    if (
        conn is None
        or not expected
        or not token
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        if conn is not None:
            # Shown in the admin; written once a minute at most (anyone can post wrong tokens).
            Bitrix24Connection.objects.filter(pk=conn.pk).filter(
                Q(last_event_refused_at__isnull=True)
                | Q(last_event_refused_at__lt=now - timedelta(minutes=1))
            ).update(last_event_refused_at=now)
        raise EventRefused("The application token is not this tenant's.")
    name = as_event or str(body.get("event") or "").strip().upper()
    if not name or len(name) > 64:
        raise EventInvalid("The request names no event.")
    data: dict[str, Any]
    if as_event:
        # Of `auth`, only whom it is for: the tokens are not stored.
        data = {key: value for key, value in body.items() if key != "auth"}
        data["auth_user_id"] = str(auth.get("user_id") or "") if isinstance(auth, dict) else ""
    else:
        posted = body.get("data")
        data = posted if isinstance(posted, dict) else {}
    requeue_at = now + REQUEUE_AFTER
    with transaction.atomic():
        event = InboundEvent.objects.create(
            event=name,
            handler_id=str(body.get("event_handler_id") or "")[:32],
            data=data,
            ts=str(body.get("ts") or "")[:20],
            next_attempt_at=requeue_at,
        )
        Bitrix24Connection.objects.filter(pk=conn.pk).update(last_event_at=now)
        tenant_wake(at=requeue_at)
        transaction.on_commit(lambda: _queue(event.pk))
    return event


def _queue(event_pk: int) -> None:
    from crm.tasks import event_process_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    task_queue(event_process_task, event_pk, what=f"Bitrix24 event {event_pk}")


def event_process(event_pk: int) -> str:
    """Runs the event's handler once; transient failures are retried with backoff."""
    with transaction.atomic():
        event = (
            InboundEvent.objects.select_for_update(skip_locked=True)
            .filter(pk=event_pk, status=InboundEvent.Status.PENDING)
            .first()
        )
        if event is None:
            return "not pending"
        handler = _HANDLERS.get(event.event)
        now = timezone.now()
        event.attempts += 1
        if handler is None:
            event.status, event.done_at, event.next_attempt_at = (
                InboundEvent.Status.IGNORED,
                now,
                None,
            )
            event.save(update_fields=["status", "done_at", "next_attempt_at", "attempts"])
            return event.status
        try:
            with transaction.atomic(), tenant_language_active():
                result = handler(event) or {}
        except Bitrix24Error as exc:
            if exc.transient and event.attempts < MAX_ATTEMPTS:
                delay = min(300.0, 5.0 * 2 ** (event.attempts - 1)) + random.uniform(0, 2)
                event.next_attempt_at = now + timedelta(seconds=delay)
                event.error = exc.display()[:1000]
                event.save(update_fields=["attempts", "next_attempt_at", "error"])
                tenant_wake(at=event.next_attempt_at)
                return "retry"
            event.status, event.error = InboundEvent.Status.FAILED, exc.display()[:1000]
        except Exception as exc:
            logger.exception("Bitrix24 event %s (%s) failed", event.pk, event.event)
            event.status, event.error = InboundEvent.Status.FAILED, repr(exc)[:1000]
        else:
            event.status, event.result, event.error = InboundEvent.Status.DONE, result, ""
        event.done_at, event.next_attempt_at = now, None
        event.save(
            update_fields=["status", "result", "error", "done_at", "next_attempt_at", "attempts"]
        )
        return event.status


@visit_hook("crm.events")
def events_due(now: datetime) -> datetime | None:
    """The dispatcher's visit: queues the events whose time came (a retry, a lost message)."""
    due = list(
        InboundEvent.objects.filter(
            status=InboundEvent.Status.PENDING, next_attempt_at__lte=now
        ).values_list("pk", flat=True)[:200]
    )
    if due:
        InboundEvent.objects.filter(pk__in=due).update(next_attempt_at=now + REQUEUE_AFTER)
        for pk in due:
            _queue(pk)
    return (
        InboundEvent.objects.filter(status=InboundEvent.Status.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


# --- What crm does itself ------------------------------------------------------------------


def _entity_id(event: InboundEvent) -> int | None:
    fields = event.data.get("FIELDS")
    raw = fields.get("ID") if isinstance(fields, dict) else None
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def _crm_entity_changed(event: InboundEvent) -> dict[str, Any]:
    """A contact, company or lead changed in Bitrix24: its cached lookups are dropped, and for
    an add or update, those of the numbers it has now (a number cached as "not found")."""
    kind = CRM_ENTITY_EVENTS[event.event]
    entity_id = _entity_id(event)
    if entity_id is None:
        return {"skipped": "no FIELDS[ID]"}
    cache_delete_entity(kind.lower(), entity_id)
    dropped: list[str] = []
    if not event.event.endswith("DELETE"):
        try:
            row = Bitrix24Client().run(b24.entity_get(kind, entity_id))
        except Bitrix24Error as exc:
            if exc.transient:
                raise
            row = {}  # gone meanwhile, or not readable: its old numbers are dropped already
        for phone in row.get("PHONE") or []:
            try:
                e164 = phone_to_e164(str(phone.get("VALUE") or ""), country=tenant_country())
            except InvalidPhoneNumber:
                continue
            cache_delete(e164)
            dropped.append(e164)
    return {"entity": [kind.lower(), entity_id], "dropped": dropped}


for _name in CRM_ENTITY_EVENTS:
    event_handler(_name)(_crm_entity_changed)


@event_handler("ONAPPUNINSTALL")
def _app_uninstalled(event: InboundEvent) -> dict[str, Any]:
    now = timezone.now()
    # An uninstall taken up after the application was installed again (the worker was behind)
    # is the old installation's: the new tokens stay.
    updated = Bitrix24Connection.objects.filter(
        Q(oauth_installed_at__isnull=True) | Q(oauth_installed_at__lt=event.received_at),
        singleton=1,
    ).update(
        uninstalled_at=now,
        oauth_access_token="",
        oauth_refresh_token="",
        oauth_application_token="",
        events_bound=[],
        sms_provider_at=None,
        last_error_code="APP_UNINSTALLED",
        last_error="The Bitrix24 application was uninstalled from the portal: install it again "
        "to reconnect.",
        last_error_at=now,
    )
    if not updated:
        return {"skipped": "installed again after this uninstall"}
    return {"uninstalled": True, "clean": str(event.data.get("CLEAN", ""))}


# --- Binding (OAuth) and the handler URL ----------------------------------------------------


def events_handler_url() -> str:
    """Where Bitrix24 posts this tenant's events: its primary domain's /bitrix24/events/."""
    return tenant_public_url("/bitrix24/events/")


def events_bind() -> list[str]:
    """Binds SIMtrix's events to this tenant's handler (OAuth only: event.bind is an app's),
    unbinding what points elsewhere (an older handler URL). Returns the events bound."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    if conn is None or conn.auth_mode != Bitrix24Connection.AuthMode.OAUTH:
        return []
    handler = events_handler_url()
    client = Bitrix24Client()
    try:
        bound = client.run(b24.event_get())
        have = set()
        for row in bound:
            name = str(row.get("event") or "").upper()
            if name not in BOUND_EVENTS:
                continue
            if row.get("handler") == handler:
                have.add(name)
            else:
                client.run(b24.event_unbind(name, str(row.get("handler") or "")))
        for name in BOUND_EVENTS:
            if name not in have:
                client.run(b24.event_bind(name, handler))
    except Bitrix24Error as exc:
        Bitrix24Connection.objects.filter(pk=conn.pk).update(events_bind_error=exc.display())
        raise
    Bitrix24Connection.objects.filter(pk=conn.pk).update(
        events_bound=list(BOUND_EVENTS), events_bound_at=timezone.now(), events_bind_error=""
    )
    return list(BOUND_EVENTS)


def events_bind_later() -> None:
    from crm.tasks import events_bind_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    # The admin's "Bind the events again" does it if this is lost.
    transaction.on_commit(lambda: task_queue(events_bind_task, what="the events' binding"))
