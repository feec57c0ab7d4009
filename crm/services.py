"""Writes to Bitrix24 (and to the tenant's Bitrix24 settings), in SIMtrix's terms.

Every function runs in the current tenant schema, takes keyword-only arguments and hides
Bitrix24's field names. Functions marked ``@batchable`` can also be sent together in one HTTP
request with ``crm_batch()`` (``crm.operations``).

How each non-idempotent request is made safe to retry (see ``crm.intents``):

- ``crm.lead.add``, ``crm.contact.add``, ``crm.deal.add``, ``crm.activity.add``: the object
  carries ``ORIGINATOR_ID="simtrix"`` and ``ORIGIN_ID`` = a hash of the intent key; after an
  ambiguous failure the matching ``crm.*.list`` finds it before anything is resent;
- ``tasks.task.add``: the task carries the marker in ``XML_ID``, searched with tasks.task.list;
- ``telephony.externalCall.register``: Bitrix24 returns the same CALL_ID for the same user,
  number, type, line and EXTERNAL_CALL_ID while the call is active, for 30 minutes (REFERENCE
  4.1); a resend within 25 minutes is therefore harmless, later it is refused;
- ``telephony.externalCall.finish``: finish creates its activity with ``ORIGIN_ID="VI_"+CALL_ID``;
  if that activity exists, or ``hide`` reports the call no longer active, it was finished;
- ``im.notify.system.add`` with an intent key: sent with a TAG, which replaces rather than
  duplicates;
- ``crm.activity.todo.add``: a to-do takes no marker; after an ambiguous failure one with the
  same owner, title and responsible made since the intent began, and owned by no other intent,
  is taken for it;
- ``crm.timeline.comment.add``, ``task.commentitem.add`` and ``crm.automation.trigger`` take no
  intent key: they are never resent after an ambiguous failure (at most once).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from crm import client as b24
from crm.cache import cache_delete, cache_delete_entity
from crm.client import Bitrix24Client
from crm.connections import (
    connection_install_oauth,
    connection_set_events_token,
    connection_set_oauth_app,
    connection_set_webhook,
    connection_test,
)
from crm.directory import (
    directory_sync,
    directory_sync_after_connect,
    directory_sync_later,
    directory_timeman_refresh,
)
from crm.domain import FinishedCall, FollowUpState, RegisteredCall
from crm.errors import Bitrix24Error
from crm.intents import intent_run
from crm.mapping import (
    ACTIVITY_DIRECTIONS,
    CLIENT_TYPES,
    DIRECTIONS,
    ORIGINATOR,
    RECORD_EXTENSIONS,
    as_int,
    automation_target,
    b24_type,
    domain_type,
    entity_url,
    finish_status_code,
    iso_datetime,
    origin_id,
    owner_type_id,
    task_binding,
)
from crm.models import Bitrix24Connection, InboundEvent, Intent, RequestLog
from crm.operations import CrmBatch, Deferred, Op, batchable, crm_batch, op_run
from crm.phones import phone_to_e164
from crm.selectors import crm_find_by_phone, crm_phone_known
from tenants.context import tenant_country

logger = logging.getLogger(__name__)

__all__ = [
    "CrmBatch",
    "Deferred",
    "connection_install_oauth",
    "connection_set_events_token",
    "connection_set_oauth_app",
    "connection_set_webhook",
    "connection_test",
    "crm_activity_log_call",
    "crm_activity_set_description",
    "crm_automation_trigger",
    "crm_batch",
    "crm_call_attach_record",
    "crm_call_finish",
    "crm_call_hide",
    "crm_call_register",
    "crm_call_show",
    "crm_deal_create_with_contact",
    "crm_deal_set_stage",
    "crm_entity_set_fields",
    "crm_entity_set_responsible",
    "crm_entity_url",
    "crm_find_by_phone",
    "crm_lead_create",
    "crm_lead_set_status",
    "crm_lookup_invalidate",
    "crm_notify",
    "crm_notify_many",
    "crm_phone_known",
    "crm_task_comment_add",
    "crm_task_complete",
    "crm_task_create",
    "crm_task_set_deadline",
    "crm_task_state",
    "crm_timeline_comment_add",
    "crm_todo_complete",
    "crm_todo_create",
    "crm_todo_set_deadline",
    "crm_todo_set_description",
    "crm_todo_state",
    "directory_sync",
    "directory_sync_after_connect",
    "directory_sync_later",
    "directory_timeman_refresh",
    "history_prune",
]

# Bitrix24 de-duplicates a re-registered active call for 30 minutes (REFERENCE 4.1).
REGISTER_RESEND_WINDOW = timedelta(minutes=25)
Direction = Literal["incoming", "outgoing"]


# ----------------------------------------------------------------------------------------------
# Housekeeping


def history_prune(*, older_than_days: int = 30) -> dict[str, int]:
    """Deletes request-log rows, finished intents and worked-off Bitrix24 events older than the
    retention period.

    Done and failed intents only: an ambiguous one may still have to be searched for. Pending
    events stay whatever their age.
    """
    cutoff = timezone.now() - timedelta(days=older_than_days)
    requests = RequestLog.objects.filter(created_at__lt=cutoff).delete()[0]
    intents = Intent.objects.filter(
        updated_at__lt=cutoff, status__in=[Intent.Status.DONE, Intent.Status.FAILED]
    ).delete()[0]
    events = (
        InboundEvent.objects.filter(received_at__lt=cutoff)
        .exclude(status=InboundEvent.Status.PENDING)
        .delete()[0]
    )
    return {"requests": requests, "intents": intents, "events": events}


# ----------------------------------------------------------------------------------------------
# Lookup cache and links


def _intent_results_taken(method: str, *, since: datetime, but: str) -> set[int | None]:
    """What other intents of `method` since `since` created (their results): a row found in
    Bitrix24 after a timeout is ours only if no other intent claims it."""
    return {
        as_int(result)
        for result in Intent.objects.filter(
            method=method, status=Intent.Status.DONE, created_at__gte=since
        )
        .exclude(key=but)
        .values_list("result", flat=True)
    }


def crm_entity_urls() -> Callable[[tuple[str, int]], str]:
    """Builds entities' card addresses in the tenant's portal (``""`` when no portal is
    connected), the portal read once: for a page or report that links many entities. Raises
    ValueError for a type Bitrix24 has no card for."""
    conn = Bitrix24Connection.objects.filter(singleton=1).first()
    portal_url = conn.portal_url if conn else ""

    def url(entity: tuple[str, int]) -> str:
        b24_type(entity[0])
        return entity_url(portal_url, entity[0], entity[1]) if portal_url else ""

    return url


def crm_entity_url(*, entity: tuple[str, int]) -> str:
    """The entity's card in the tenant's portal (``""`` when no portal is connected)."""
    return crm_entity_urls()(entity)


def crm_lookup_invalidate(*, phone: str) -> None:
    """Forgets the cached lookup of ``phone`` (after SIMtrix changed what it would find)."""
    cache_delete(phone_to_e164(phone, country=tenant_country()))


# ----------------------------------------------------------------------------------------------
# Telephony


def _e164(phone: str) -> str:
    return phone_to_e164(phone, country=tenant_country())


def _register_op(
    *,
    intent_key: str,
    user_id: int,
    phone: str,
    direction: Direction,
    started_at: datetime,
    line_number: str,
    external_call_id: str,
    entity: tuple[str, int] | None,
    show: bool,
) -> Op[RegisteredCall]:
    params: dict[str, Any] = {
        "USER_ID": int(user_id),
        "PHONE_NUMBER": _e164(phone),
        "TYPE": DIRECTIONS[direction],
        "CALL_START_DATE": iso_datetime(started_at),
        # SIMtrix creates leads itself, once (REFERENCE 4.6, pitfall 2).
        "CRM_CREATE": 0,
        "SHOW": 1 if show else 0,
        "LINE_NUMBER": line_number,
        "EXTERNAL_CALL_ID": external_call_id,
    }
    if entity is not None:
        if entity[0] not in CLIENT_TYPES:
            raise ValueError("A call can be bound to a contact, company or lead, not a deal")
        params["CRM_ENTITY_TYPE"] = b24_type(entity[0])
        params["CRM_ENTITY_ID"] = int(entity[1])

    def to_result(raw: dict[str, Any]) -> RegisteredCall:
        bound_type = domain_type(str(raw.get("CRM_ENTITY_TYPE") or ""))
        bound_id = as_int(raw.get("CRM_ENTITY_ID"))
        return RegisteredCall(
            b24_call_id=str(raw["CALL_ID"]),
            entity=(bound_type, bound_id) if bound_type and bound_id else None,
        )

    return Op(
        b24.externalcall_register(params),
        to_result,
        intent_key=intent_key,
        resend_window=REGISTER_RESEND_WINDOW,
    )


@batchable(_register_op)
def crm_call_register(
    *,
    intent_key: str,
    user_id: int,
    phone: str,
    direction: Direction,
    started_at: datetime,
    line_number: str,
    external_call_id: str,
    entity: tuple[str, int] | None,
    show: bool,
    also_show: Sequence[int] = (),
) -> RegisteredCall:
    """Registers the call in Bitrix24 telephony (``telephony.externalCall.register``).

    Bind ``entity`` (from the lookup) explicitly: Bitrix24 fixes the call's CRM binding here and
    its own auto-search misses numbers stored in other formats. Auth modes that refuse
    telephony raise ``Bitrix24AuthTypeDenied``: fall back to ``crm_activity_log_call``.
    ``show`` pops the card for ``user_id``; ``also_show`` pops it for other users in the same
    HTTP request (a ``batch`` whose ``show`` takes the new call's id from the register).
    """
    op = _register_op(
        intent_key=intent_key,
        user_id=user_id,
        phone=phone,
        direction=direction,
        started_at=started_at,
        line_number=line_number,
        external_call_id=external_call_id,
        entity=entity,
        show=show,
    )
    if not also_show:
        return op_run(op)
    client = Bitrix24Client()
    finder = op.find_existing

    def send() -> Any:
        results = client.run_batch(
            {
                "register": op.req,
                "show": b24.externalcall_show(
                    b24.batch_reference("register", "CALL_ID"), list(also_show)
                ),
            },
            halt=True,
            intent_key=intent_key,
        )
        registered = results["register"]
        if isinstance(registered, Bitrix24Error):
            raise registered
        if isinstance(results["show"], Bitrix24Error):
            # The card is a courtesy while it rings; the call itself is registered.
            logger.warning("showing the card failed: %s", results["show"])
        return registered

    raw = intent_run(
        key=intent_key,
        method=op.req.method,
        send=send,
        find_existing=(lambda: finder(client)) if finder else None,
        resend_window=op.resend_window,
    )
    return op.to_result(raw)


def _show_op(*, b24_call_id: str, user_ids: list[int]) -> Op[bool]:
    return Op(b24.externalcall_show(b24_call_id, user_ids))


def _hide_op(*, b24_call_id: str, user_ids: list[int]) -> Op[bool]:
    return Op(b24.externalcall_hide(b24_call_id, user_ids))


@batchable(_show_op)
def crm_call_show(*, b24_call_id: str, user_ids: list[int]) -> bool:
    """Pops the call card for these users; False when the call is no longer active."""
    return op_run(_show_op(b24_call_id=b24_call_id, user_ids=user_ids))


@batchable(_hide_op)
def crm_call_hide(*, b24_call_id: str, user_ids: list[int]) -> bool:
    return op_run(_hide_op(b24_call_id=b24_call_id, user_ids=user_ids))


def _finish_op(
    *,
    intent_key: str,
    b24_call_id: str,
    user_id: int,
    duration_s: int,
    outcome: str,
    failed_reason: str = "",
) -> Op[FinishedCall]:
    status_code = finish_status_code(outcome, failed_reason)
    # CALL_STATUS is "successful" iff DURATION > 0 (REFERENCE 4.2): only answered calls last.
    duration = max(0, int(duration_s)) if outcome == "answered" else 0
    params: dict[str, Any] = {
        "CALL_ID": b24_call_id,
        "USER_ID": int(user_id),
        "DURATION": duration,
        "STATUS_CODE": status_code,
    }
    if failed_reason:
        params["FAILED_REASON"] = failed_reason[:255]

    def find_existing(client: Bitrix24Client) -> dict[str, Any] | None:
        rows = client.run(
            b24.activity_list(
                {"ORIGIN_ID": f"VI_{b24_call_id}"}, ["ID", "OWNER_TYPE_ID", "OWNER_ID"]
            )
        )
        if rows:
            return {"CRM_ACTIVITY_ID": as_int(rows[0].get("ID")), "CALL_ID": b24_call_id}
        if not client.run(b24.externalcall_hide(b24_call_id, [int(user_id)])):
            return {"CRM_ACTIVITY_ID": None, "CALL_ID": b24_call_id}  # no longer active: finished
        return None

    def to_result(raw: dict[str, Any]) -> FinishedCall:
        raw_errors = raw.get("ERRORS")
        errors = raw_errors if isinstance(raw_errors, dict) else {}
        bound_type = domain_type(str(raw.get("CRM_ENTITY_TYPE") or ""))
        bound_id = as_int(raw.get("CRM_ENTITY_ID"))
        return FinishedCall(
            b24_call_id=b24_call_id,
            activity_id=as_int(raw.get("CRM_ACTIVITY_ID")),
            status_code=status_code,
            duration_s=duration,
            entity=(bound_type, bound_id) if bound_type and bound_id else None,
            activity_error=str(errors.get("ACTIVITY_CREATION") or ""),
        )

    return Op(
        b24.externalcall_finish(params),
        to_result,
        intent_key=intent_key,
        find_existing=find_existing,
    )


@batchable(_finish_op)
def crm_call_finish(
    *,
    intent_key: str,
    b24_call_id: str,
    user_id: int,
    duration_s: int,
    outcome: str,
    failed_reason: str = "",
) -> FinishedCall:
    """Ends the registered call; Bitrix24 then writes the call activity to the bound entity.

    ``outcome`` is the bridge's (answered, missed, rejected, busy, no_answer, failed,
    cancelled), mapped by ``crm.mapping.finish_status_code``.
    """
    return op_run(
        _finish_op(
            intent_key=intent_key,
            b24_call_id=b24_call_id,
            user_id=user_id,
            duration_s=duration_s,
            outcome=outcome,
            failed_reason=failed_reason,
        )
    )


def crm_call_attach_record(*, b24_call_id: str, filename: str, content: bytes) -> int | None:
    """Attaches the recording (MP3 or WAV) to a finished call; re-attaching replaces it."""
    if not filename.lower().endswith(RECORD_EXTENSIONS):
        raise ValueError("Bitrix24 accepts only .mp3 and .wav recordings")
    if not content:
        raise ValueError("The recording is empty")
    encoded = base64.b64encode(content).decode("ascii")
    result = Bitrix24Client().run(b24.externalcall_attach_record(b24_call_id, filename, encoded))
    return as_int(result.get("FILE_ID"))


def _log_call_op(
    *,
    intent_key: str,
    entity: tuple[str, int],
    user_id: int,
    phone: str,
    direction: Direction,
    started_at: datetime,
    duration_s: int,
    outcome: str,
    subject: str = "",
    description: str = "",
) -> Op[int]:
    marker = origin_id(intent_key)
    e164 = _e164(phone)
    duration = max(0, int(duration_s)) if outcome == "answered" else 0
    # An unanswered incoming call stays open, like Bitrix24's own "missed call" to-do.
    completed = not (direction == "incoming" and outcome != "answered")
    if not subject:
        subject = _activity_subject(direction=direction, outcome=outcome, e164=e164)
    fields = {
        "OWNER_TYPE_ID": owner_type_id(entity[0]),
        "OWNER_ID": int(entity[1]),
        "TYPE_ID": 2,
        "DIRECTION": ACTIVITY_DIRECTIONS[direction],
        "SUBJECT": subject,
        "DESCRIPTION": description,
        "DESCRIPTION_TYPE": 1,
        "RESPONSIBLE_ID": int(user_id),
        "COMPLETED": "Y" if completed else "N",
        "START_TIME": iso_datetime(started_at),
        "END_TIME": iso_datetime(started_at + timedelta(seconds=duration)),
        "COMMUNICATIONS": [
            {"VALUE": e164, "ENTITY_ID": int(entity[1]), "ENTITY_TYPE_ID": owner_type_id(entity[0])}
        ],
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": marker,
    }

    def find_existing(client: Bitrix24Client) -> int | None:
        rows = client.run(b24.activity_list({"ORIGIN_ID": marker}, ["ID"]))
        return as_int(rows[0]["ID"]) if rows else None

    return Op(b24.activity_add(fields), int, intent_key=intent_key, find_existing=find_existing)


def _activity_subject(*, direction: str, outcome: str, e164: str) -> str:
    """ "Missed incoming call from +48...", in the language active (the tenant's)."""
    incoming = direction == "incoming"
    subjects = {
        ("answered", True): _("Incoming call from %(number)s"),
        ("answered", False): _("Outgoing call to %(number)s"),
        ("missed", True): _("Missed incoming call from %(number)s"),
        ("missed", False): _("Missed outgoing call to %(number)s"),
        ("no_answer", True): _("Unanswered incoming call from %(number)s"),
        ("no_answer", False): _("Unanswered outgoing call to %(number)s"),
    }
    fallback = subjects[("answered", incoming)]
    return subjects.get((outcome, incoming), fallback) % {"number": e164}


@batchable(_log_call_op)
def crm_activity_log_call(
    *,
    intent_key: str,
    entity: tuple[str, int],
    user_id: int,
    phone: str,
    direction: Direction,
    started_at: datetime,
    duration_s: int,
    outcome: str,
    subject: str = "",
    description: str = "",
) -> int:
    """A call activity written directly (``crm.activity.add``), for when telephony methods are
    refused (``Bitrix24AuthTypeDenied``). Returns the activity id. Without a ``subject`` one
    is written from the direction, outcome and number."""
    return op_run(
        _log_call_op(
            intent_key=intent_key,
            entity=entity,
            user_id=user_id,
            phone=phone,
            direction=direction,
            started_at=started_at,
            duration_s=duration_s,
            outcome=outcome,
            subject=subject,
            description=description,
        )
    )


def _set_description_op(*, activity_id: int, text: str) -> Op[None]:
    return Op(b24.activity_update(activity_id, {"DESCRIPTION": text, "DESCRIPTION_TYPE": 1}), _none)


@batchable(_set_description_op)
def crm_activity_set_description(
    *, activity_id: int, text: str | None = None, description: str | None = None
) -> None:
    """Replaces an activity's description (e.g. the call's notes after the call).

    ``description`` is accepted as another name for ``text``."""
    body = text if text is not None else description
    if body is None:
        raise TypeError("crm_activity_set_description needs text")
    op_run(_set_description_op(activity_id=activity_id, text=body))


def _none(_: Any) -> None:
    return None


# ----------------------------------------------------------------------------------------------
# CRM entities


def _find_by_origin(b24_name: str, marker: str) -> Any:
    def find(client: Bitrix24Client) -> int | None:
        rows = client.run(
            b24.entity_list(
                b24_name, filter={"ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": marker}, select=["ID"]
            )
        )
        return as_int(rows[0]["ID"]) if rows else None

    return find


def _lead_create_op(
    *,
    intent_key: str,
    phone: str,
    title: str,
    status_id: str,
    source_id: str,
    responsible_id: int,
    comments: str = "",
) -> Op[int]:
    e164 = _e164(phone)
    marker = origin_id(intent_key)
    fields = {
        "TITLE": title,
        "STATUS_ID": status_id,
        "SOURCE_ID": source_id,
        "ASSIGNED_BY_ID": int(responsible_id),
        "OPENED": "Y",
        "PHONE": [{"VALUE": e164, "VALUE_TYPE": "WORK"}],
        "COMMENTS": comments,
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": marker,
    }
    return Op(
        b24.entity_add("LEAD", fields),
        int,
        intent_key=intent_key,
        find_existing=_find_by_origin("LEAD", marker),
        after=lambda _: cache_delete(e164),
    )


@batchable(_lead_create_op)
def crm_lead_create(
    *,
    intent_key: str,
    phone: str,
    title: str,
    status_id: str,
    source_id: str,
    responsible_id: int,
    comments: str = "",
) -> int:
    """Creates a lead for ``phone`` (stored in E.164); the lookup cache of that number is
    dropped. Returns the lead id."""
    return op_run(
        _lead_create_op(
            intent_key=intent_key,
            phone=phone,
            title=title,
            status_id=status_id,
            source_id=source_id,
            responsible_id=responsible_id,
            comments=comments,
        )
    )


class CreatedDeal(NamedTuple):
    deal_id: int
    contact_id: int


def crm_deal_create_with_contact(
    *,
    intent_key: str,
    phone: str,
    title: str,
    category_id: int | None = None,
    stage_id: str = "",
    responsible_id: int,
    pipeline_id: int | None = None,
) -> CreatedDeal:
    """A deal for the caller: bound to the contact the number already belongs to, or to a new
    contact holding the number. Returns ``(deal_id, contact_id)`` (also as attributes).

    ``pipeline_id`` is accepted as another name for ``category_id``; an empty ``stage_id``
    leaves the pipeline's first stage to Bitrix24.
    """
    category = category_id if category_id is not None else (pipeline_id or 0)
    e164 = _e164(phone)
    lookup = crm_find_by_phone(phone=e164, budget_s=float("inf"))
    client = Bitrix24Client()
    if lookup.entity is not None and lookup.entity.type == "contact":
        contact_id = lookup.entity.id
    else:
        marker = origin_id(f"{intent_key}:contact")
        contact_fields = {
            "NAME": e164,
            "OPENED": "Y",
            "SOURCE_ID": "CALL",
            "ASSIGNED_BY_ID": int(responsible_id),
            "PHONE": [{"VALUE": e164, "VALUE_TYPE": "WORK"}],
            "ORIGINATOR_ID": ORIGINATOR,
            "ORIGIN_ID": marker,
        }
        if lookup.entity is not None and lookup.entity.type == "company":
            contact_fields["COMPANY_ID"] = lookup.entity.id
        contact_id = op_run(
            Op(
                b24.entity_add("CONTACT", contact_fields),
                int,
                intent_key=f"{intent_key}:contact",
                find_existing=_find_by_origin("CONTACT", marker),
            ),
            client,
        )
    marker = origin_id(f"{intent_key}:deal")
    deal_fields: dict[str, Any] = {
        "TITLE": title,
        "CATEGORY_ID": int(category),
        "ASSIGNED_BY_ID": int(responsible_id),
        "CONTACT_IDS": [contact_id],
        "OPENED": "Y",
        "SOURCE_ID": "CALL",
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": marker,
    }
    if stage_id:
        deal_fields["STAGE_ID"] = stage_id
    deal_id = op_run(
        Op(
            b24.entity_add("DEAL", deal_fields),
            int,
            intent_key=f"{intent_key}:deal",
            find_existing=_find_by_origin("DEAL", marker),
        ),
        client,
    )
    cache_delete(e164)
    cache_delete_entity("contact", contact_id)
    return CreatedDeal(deal_id, contact_id)


def _set_responsible_op(*, entity: tuple[str, int], user_id: int) -> Op[None]:
    return Op(
        b24.entity_update(b24_type(entity[0]), entity[1], {"ASSIGNED_BY_ID": int(user_id)}),
        _none,
        after=lambda _: cache_delete_entity(entity[0], entity[1]),
    )


@batchable(_set_responsible_op)
def crm_entity_set_responsible(*, entity: tuple[str, int], user_id: int) -> None:
    """Makes ``user_id`` responsible for the contact, company, lead or deal."""
    op_run(_set_responsible_op(entity=entity, user_id=user_id))


def _entity_update_op(*, entity: tuple[str, int], fields: dict[str, Any]) -> Op[None]:
    return Op(
        b24.entity_update(b24_type(entity[0]), entity[1], fields),
        _none,
        after=lambda _: cache_delete_entity(entity[0], entity[1]),
    )


@batchable(_entity_update_op)
def crm_entity_set_fields(*, entity: tuple[str, int], fields: dict[str, Any]) -> None:
    """Sets fields of a contact, company, lead or deal, named as Bitrix24 names them (``UF_*``
    included): a scenario's "update fields" action, whose names the tenant wrote and SIMtrix
    checked against ``crm.*.fields``. Bitrix24 ignores a name it does not know (b24restdocs
    ``crm-deal-update.md``), so the check before is what tells. Sending it again is harmless."""
    op_run(_entity_update_op(entity=entity, fields=fields))


def crm_lead_set_status(*, lead_id: int, status_id: str) -> None:
    """Moves a lead to a status of the ``STATUS`` directory (``crm.lead.update``)."""
    op_run(_entity_update_op(entity=("lead", lead_id), fields={"STATUS_ID": status_id}))


def crm_deal_set_stage(*, deal_id: int, stage_id: str) -> None:
    """Moves a deal to a stage of its own pipeline (``crm.deal.update``; a deal's pipeline is
    changed by ``crm.item.update`` only, which SIMtrix does not do)."""
    op_run(_entity_update_op(entity=("deal", deal_id), fields={"STAGE_ID": stage_id}))


def _comment_op(*, entity: tuple[str, int], text: str) -> Op[int]:
    b24_type(entity[0])
    return Op(b24.timeline_comment_add(entity[0], entity[1], text), int)


@batchable(_comment_op)
def crm_timeline_comment_add(*, entity: tuple[str, int], text: str) -> int:
    """A comment in the entity's timeline; returns its id. Never resent after an ambiguous
    failure (it has no intent key), so it appears at most once."""
    return op_run(_comment_op(entity=entity, text=text))


def _trigger_op(*, entity: tuple[str, int], code: str) -> Op[None]:
    return Op(b24.automation_trigger(automation_target(entity), code), _none)


@batchable(_trigger_op)
def crm_automation_trigger(*, entity: tuple[str, int], code: str) -> None:
    """Fires the "incoming webhook" automation trigger ``code`` on the entity (REFERENCE 5.6)."""
    op_run(_trigger_op(entity=entity, code=code))


# ----------------------------------------------------------------------------------------------
# Tasks and notifications


def _task_create_op(
    *,
    intent_key: str,
    title: str,
    description: str,
    responsible_id: int,
    deadline: datetime | None,
    bindings: list[tuple[str, int]],
) -> Op[int]:
    marker = origin_id(intent_key)
    fields: dict[str, Any] = {
        "TITLE": title,
        "DESCRIPTION": description,
        "RESPONSIBLE_ID": int(responsible_id),
        "XML_ID": marker,
    }
    if deadline is not None:
        fields["DEADLINE"] = iso_datetime(deadline)
    if bindings:
        fields["UF_CRM_TASK"] = [task_binding(b) for b in bindings]

    def find_existing(client: Bitrix24Client) -> int | None:
        return _find_task(
            client, intent_key=intent_key, marker=marker, title=title, responsible_id=responsible_id
        )

    return Op(b24.task_add(fields), int, intent_key=intent_key, find_existing=find_existing)


def _find_task(
    client: Bitrix24Client, *, intent_key: str, marker: str, title: str, responsible_id: int
) -> int | None:
    """The task an earlier, unanswered ``tasks.task.add`` of this intent created, if any.

    Its XML_ID carries the marker; portals that do not keep or filter XML_ID are searched by
    title and responsible since the intent began, skipping tasks other intents own.
    """
    intent = Intent.objects.filter(key=intent_key).first()
    since = (intent.created_at if intent else timezone.now()) - timedelta(minutes=2)
    rows = client.run(
        b24.task_list(
            {
                "RESPONSIBLE_ID": int(responsible_id),
                "TITLE": title,
                ">=CREATED_DATE": iso_datetime(timezone.localtime(since)),
            },
            ["ID", "TITLE", "XML_ID", "CREATED_DATE"],
        )
    )
    rows = [r for r in rows if r.get("title", r.get("TITLE")) == title]
    for row in rows:
        if (row.get("xmlId") or row.get("XML_ID")) == marker:
            return as_int(row.get("id") or row.get("ID"))
    taken = _intent_results_taken("tasks.task.add", since=since, but=intent_key)
    mine = [
        as_int(r.get("id") or r.get("ID")) for r in rows if not (r.get("xmlId") or r.get("XML_ID"))
    ]
    untaken = [task_id for task_id in mine if task_id is not None and task_id not in taken]
    return min(untaken) if untaken else None


@batchable(_task_create_op)
def crm_task_create(
    *,
    intent_key: str,
    title: str,
    description: str,
    responsible_id: int,
    deadline: datetime | None,
    bindings: list[tuple[str, int]],
) -> int:
    """A task for ``responsible_id``, linked to the CRM ``bindings``; returns the task id."""
    return op_run(
        _task_create_op(
            intent_key=intent_key,
            title=title,
            description=description,
            responsible_id=responsible_id,
            deadline=deadline,
            bindings=bindings,
        )
    )


def _task_complete_op(*, task_id: int) -> Op[None]:
    return Op(b24.task_complete(task_id), _none)


@batchable(_task_complete_op)
def crm_task_complete(*, task_id: int) -> None:
    op_run(_task_complete_op(task_id=task_id))


# Task statuses that still need someone (1 new, 2 pending, 3 in progress, 6 deferred); 4
# "supposedly completed", 5 completed and 7 declined are done with.
_TASK_OPEN_STATUSES = frozenset({1, 2, 3, 6})


def _moment(value: Any) -> datetime | None:
    return parse_datetime(str(value)) if value else None


def crm_task_state(*, task_id: int) -> FollowUpState:
    """Whether a task is still to be done, and its deadline (``tasks.task.get``)."""
    task = Bitrix24Client().run(b24.task_get(task_id, ["ID", "STATUS", "DEADLINE"]))
    status = as_int(task.get("status", task.get("STATUS")))
    return FollowUpState(
        open=status in _TASK_OPEN_STATUSES,
        deadline=_moment(task.get("deadline", task.get("DEADLINE"))),
    )


def crm_task_set_deadline(*, task_id: int, deadline: datetime) -> None:
    op_run(Op(b24.task_update(task_id, {"DEADLINE": iso_datetime(deadline)}), _none))


def crm_task_comment_add(*, task_id: int, text: str) -> int:
    """A comment on a task (``task.commentitem.add``); returns its id. No intent key: never
    resent after an ambiguous failure, so it appears at most once."""
    return op_run(Op(b24.task_comment_add(task_id, text), int))


def _todo_create_op(
    *,
    intent_key: str,
    entity: tuple[str, int],
    title: str,
    description: str,
    responsible_id: int,
    deadline: datetime,
) -> Op[int]:
    owner_type = owner_type_id(entity[0])

    def find_existing(client: Bitrix24Client) -> int | None:
        # A to-do carries no ORIGIN_ID: after an unanswered add, look for one with its owner,
        # title and responsible made since the intent began that no other intent owns.
        intent = Intent.objects.filter(key=intent_key).first()
        since = (intent.created_at if intent else timezone.now()) - timedelta(minutes=2)
        rows = client.run(
            b24.activity_list(
                {
                    "OWNER_TYPE_ID": owner_type,
                    "OWNER_ID": int(entity[1]),
                    "PROVIDER_ID": "CRM_TODO",
                    "RESPONSIBLE_ID": int(responsible_id),
                    ">=CREATED": iso_datetime(timezone.localtime(since)),
                },
                ["ID", "SUBJECT"],
            )
        )
        taken = _intent_results_taken("crm.activity.todo.add", since=since, but=intent_key)
        found = [
            activity_id
            for row in rows
            if row.get("SUBJECT") == title
            and (activity_id := as_int(row.get("ID"))) is not None
            and activity_id not in taken
        ]
        return min(found) if found else None

    return Op(
        b24.todo_add(
            owner_type_id=owner_type,
            owner_id=entity[1],
            deadline=iso_datetime(deadline),
            title=title,
            description=description,
            responsible_id=responsible_id,
        ),
        int,
        intent_key=intent_key,
        find_existing=find_existing,
    )


@batchable(_todo_create_op)
def crm_todo_create(
    *,
    intent_key: str,
    entity: tuple[str, int],
    title: str,
    description: str,
    responsible_id: int,
    deadline: datetime,
) -> int:
    """A to-do ("universal activity", ``crm.activity.todo.add``) on the entity's timeline for
    ``responsible_id``, due at ``deadline``; returns the activity id."""
    return op_run(
        _todo_create_op(
            intent_key=intent_key,
            entity=entity,
            title=title,
            description=description,
            responsible_id=responsible_id,
            deadline=deadline,
        )
    )


def crm_todo_state(*, activity_id: int) -> FollowUpState:
    """Whether a to-do is still open, its deadline and description (``crm.activity.get``)."""
    row = Bitrix24Client().run(b24.activity_get(activity_id))
    return FollowUpState(
        open=bool(row) and row.get("COMPLETED") != "Y",
        deadline=_moment(row.get("DEADLINE")),
        description=str(row.get("DESCRIPTION") or ""),
    )


def crm_todo_complete(*, activity_id: int) -> None:
    """Marks a to-do done (``crm.activity.update`` COMPLETED: the to-do methods have no
    completion of their own)."""
    op_run(Op(b24.activity_update(activity_id, {"COMPLETED": "Y"}), _none))


def crm_todo_set_deadline(*, activity_id: int, entity: tuple[str, int], deadline: datetime) -> None:
    op_run(
        Op(
            b24.todo_update_deadline(
                activity_id,
                owner_type_id=owner_type_id(entity[0]),
                owner_id=entity[1],
                deadline=iso_datetime(deadline),
            ),
            _none,
        )
    )


def crm_todo_set_description(*, activity_id: int, entity: tuple[str, int], text: str) -> None:
    op_run(
        Op(
            b24.todo_update_description(
                activity_id, owner_type_id=owner_type_id(entity[0]), owner_id=entity[1], text=text
            ),
            _none,
        )
    )


def _notify_tag(key: str, user_id: int) -> str:
    # Per user: whether Bitrix24 replaces a tag per recipient or portal-wide is not documented.
    return origin_id(f"{key}:{int(user_id)}") if key else ""


def _notify_op(*, user_id: int, message: str, intent_key: str = "") -> Op[int | None]:
    tag = _notify_tag(intent_key, user_id)
    return Op(b24.notify_system_add(user_id, message, tag=tag))


@batchable(_notify_op)
def crm_notify(*, user_id: int, message: str, intent_key: str = "") -> int | None:
    """A Bitrix24 notification to ``user_id``; returns its id (None if Bitrix24 said false).

    With ``intent_key`` the notification is tagged, so sending it again replaces it."""
    return op_run(_notify_op(user_id=user_id, message=message, intent_key=intent_key))


def crm_notify_many(*, user_ids: list[int], message: str, tag: str = "") -> dict[int, int | None]:
    """The same notification to several users in one request; ``tag`` makes a resend replace
    rather than repeat it. Returns each user's notification id."""
    if not user_ids:
        return {}
    with crm_batch() as batch:
        sent: dict[int, Deferred[int | None]] = {
            user_id: batch.add_op(
                Op(b24.notify_system_add(user_id, message, tag=_notify_tag(tag, user_id)))
            )
            for user_id in dict.fromkeys(user_ids)
        }
    return {user_id: deferred.result() for user_id, deferred in sent.items()}
