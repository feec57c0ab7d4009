"""What Bitrix24 hears of an SMS, after the fact: the provider's status, the timeline comment
of a scenario's SMS once it is sent, and a text a phone received (in the sender's timeline, the
responsible notified; an unknown sender as the tenant's setting says).

One follow-up per message at a time: claimed in a short transaction (a lease keeps the
dispatcher off it), Bitrix24 asked with no row locked, the outcome written after. Each step
is recorded as done on the message, so a rerun does only what is left.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from crm.errors import Bitrix24Error, Bitrix24TransientError
from crm.messageservice import crm_sms_status_update
from crm.selectors import crm_find_by_phone, lead_status_first
from crm.services import crm_lead_create, crm_notify, crm_timeline_comment_add
from scenarios.models import ActionRun
from scenarios.routing.services import round_robin_pick
from scenarios.selectors import agents
from sms.models import SmsMessage, SmsSettings
from sms.services import SYNC_LEASE, sms_settings_get, sync_queue, sync_soon
from tenants.connection import tenant_connection
from tenants.context import tenant_language_active, tenant_timezone
from tenants.wake import tenant_wake, visit_hook

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
# What Bitrix24's message is told for each of ours (messageservice.message.status.update).
_B24_STATUS = {
    SmsMessage.Status.QUEUED: "",
    SmsMessage.Status.SENT: "sent",
    SmsMessage.Status.DELIVERED: "delivered",
    SmsMessage.Status.FAILED: "failed",
}


def sms_sync(sms_pk: int) -> str:
    with transaction.atomic():
        sms = (
            SmsMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("device")
            .filter(pk=sms_pk, sync_due_at__isnull=False)
            .first()
        )
        if sms is None:
            return "nothing to do"
        sms.sync_attempts += 1
        sms.sync_due_at = timezone.now() + SYNC_LEASE
        sms.save(update_fields=["sync_attempts", "sync_due_at"])
        tenant_wake(at=sms.sync_due_at)
    try:
        with tenant_language_active():
            done = _steps(sms)
    except Bitrix24Error as exc:
        sms.sync_error = exc.display()[:300]
        if exc.transient and sms.sync_attempts < MAX_ATTEMPTS:
            delay = min(600, 10 * 2 ** (sms.sync_attempts - 1))
            sms.sync_due_at = timezone.now() + timedelta(seconds=delay)
            with transaction.atomic():
                _save(sms)
                tenant_wake(at=sms.sync_due_at)
            return "retry"
        sms.sync_due_at = None
        _save(sms)
        return "failed"
    sms.sync_error = ""
    sms.sync_due_at = None
    _save(sms)
    return done


def _save(sms: SmsMessage) -> None:
    # Only the follow-up's own fields: the bridge's events may have moved the status meanwhile.
    fields = ["b24_status", "comment_id", "notified_user_id", "outcome", "sync_due_at"]
    SmsMessage.objects.filter(pk=sms.pk).update(
        sync_error=sms.sync_error, **{name: getattr(sms, name) for name in fields}
    )
    if sms.sync_due_at is None:
        # A status that came while this ran is followed up too.
        current = SmsMessage.objects.filter(pk=sms.pk).values_list("status", flat=True).first()
        if current is not None and current != sms.status:
            with transaction.atomic():
                sync_soon(SmsMessage.objects.get(pk=sms.pk))


def _steps(sms: SmsMessage) -> str:
    if sms.direction == SmsMessage.Direction.INCOMING:
        return _received(sms)
    done = []
    wanted = _B24_STATUS[SmsMessage.Status(sms.status)]
    if sms.b24_message_id and wanted and sms.b24_status != wanted:
        crm_sms_status_update(message_id=sms.b24_message_id, status=wanted)
        sms.b24_status = wanted
        done.append(f"Bitrix24 told {wanted}")
    if (
        sms.source == SmsMessage.Source.SCENARIO
        and sms.status in (SmsMessage.Status.SENT, SmsMessage.Status.DELIVERED)
        and sms.crm_entity_id
        and sms.comment_id is None
    ):
        sms.comment_id = crm_timeline_comment_add(
            entity=(sms.crm_entity_type, sms.crm_entity_id), text=_sent_comment(sms)
        )
        sms.outcome = f"in the {sms.crm_entity_type}'s timeline (comment {sms.comment_id})"
        done.append("timeline comment")
    if sms.source == SmsMessage.Source.SCENARIO:
        _run_tell(sms)
    return ", ".join(done) or "nothing to do"


def _run_tell(sms: SmsMessage) -> None:
    """The action's run says how its SMS went (the run itself ended when it was queued)."""
    run_id = sms.intent_key.partition(":")[2]
    if not run_id.isdigit():
        return
    run = ActionRun.objects.filter(pk=int(run_id)).first()
    if run is None:
        return
    result = {**run.result, "status": sms.status}
    if sms.status == SmsMessage.Status.FAILED:
        ActionRun.objects.filter(pk=run.pk).update(
            result=result, last_error=f"The SMS was not sent: {sms.error}"[:1000]
        )
    else:
        ActionRun.objects.filter(pk=run.pk).update(result=result)


def _line(sms: SmsMessage) -> str:
    device = sms.device
    return f"{device.name} ({device.phone_number})" if device else "no phone"


def _local(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return f"{moment.astimezone(ZoneInfo(tenant_timezone())):%Y-%m-%d %H:%M}"


def _sent_comment(sms: SmsMessage) -> str:
    values = {"number": sms.phone_number, "line": _line(sms), "time": _local(sms.sent_at)}
    return _("SMS sent to %(number)s from %(line)s at %(time)s:") % values + f"\n{sms.text}"


def _received(sms: SmsMessage) -> str:
    if sms.outcome:
        return "nothing to do"
    received = _("SMS from %(number)s to %(line)s at %(time)s") % {
        "number": sms.phone_number,
        "line": _line(sms),
        "time": _local(sms.received_at),
    }
    try:
        lookup = crm_find_by_phone(phone=sms.phone_number, budget_s=math.inf)
    except ValueError:
        lookup = None  # an alphanumeric sender: nobody in the CRM
    if lookup is not None and lookup.status not in ("found", "not_found"):
        raise Bitrix24TransientError(lookup.error or f"the sender's lookup is {lookup.status}")
    if lookup is not None and lookup.found and lookup.entity is not None:
        entity = (lookup.entity.type, lookup.entity.id)
        if sms.comment_id is None:
            sms.comment_id = crm_timeline_comment_add(
                entity=entity, text=f"{received}:\n{sms.text}"
            )
        sms.crm_entity_type, sms.crm_entity_id = entity
        SmsMessage.objects.filter(pk=sms.pk).update(
            crm_entity_type=entity[0], crm_entity_id=entity[1]
        )
        user = lookup.responsible.id if lookup.responsible else None
        user = user or (sms.device.bitrix24_user_id if sms.device else None)
        if user and sms.notified_user_id is None:
            crm_notify(
                user_id=user,
                message=f"{received} ({lookup.entity.name}): {sms.text}"[:1000],
                intent_key=f"sms:{tenant_connection.schema_name}:{sms.pk}:notify",
            )
            sms.notified_user_id = user
        sms.outcome = f"in {lookup.entity.name}'s timeline, user {user} notified"
        return sms.outcome
    return _unknown(sms, received)


def _unknown(sms: SmsMessage, received: str) -> str:
    policy = sms_settings_get().unknown_sender
    agent = sms.device.bitrix24_user_id if sms.device else None
    if policy == SmsSettings.Unknown.IGNORE:
        sms.outcome = gettext_noop("unknown sender: ignored (the tenant's setting)")
    elif policy == SmsSettings.Unknown.NOTIFY_AGENT and agent:
        crm_notify(
            user_id=agent,
            message=(
                _("%(received)s (not in the CRM): %(text)s")
                % {"received": received, "text": sms.text}
            )[:1000],
            intent_key=f"sms:{tenant_connection.schema_name}:{sms.pk}:notify",
        )
        sms.notified_user_id = agent
        sms.outcome = f"unknown sender: user {agent} notified"
    elif policy == SmsSettings.Unknown.CREATE_LEAD and not sms.phone_number.startswith("+"):
        # An alphanumeric sender ("BANK") is no lead: nobody can call it back.
        sms.outcome = gettext_noop("unknown sender: not a phone number, no lead made")
    elif policy == SmsSettings.Unknown.CREATE_LEAD:
        responsible = round_robin_pick(key="agents", candidates=agents(), peek=False) or agent
        if not responsible:
            sms.outcome = gettext_noop("unknown sender: no agent to make the lead's responsible")
            return sms.outcome
        lead_id = crm_lead_create(
            intent_key=f"sms:{tenant_connection.schema_name}:{sms.pk}:lead",
            phone=sms.phone_number,
            title=_("SMS from %(number)s") % {"number": sms.phone_number},
            status_id=lead_status_first() or "NEW",
            source_id="OTHER",
            responsible_id=responsible,
            comments=sms.text,
        )
        sms.comment_id = sms.comment_id or crm_timeline_comment_add(
            entity=("lead", lead_id), text=f"{received}:\n{sms.text}"
        )
        sms.crm_entity_type, sms.crm_entity_id = "lead", lead_id
        SmsMessage.objects.filter(pk=sms.pk).update(crm_entity_type="lead", crm_entity_id=lead_id)
        sms.outcome = f"unknown sender: lead {lead_id} created for user {responsible}"
    else:
        sms.outcome = gettext_noop("unknown sender: the line has no agent to notify")
    return sms.outcome


@visit_hook("sms")
def sms_due(now: datetime) -> datetime | None:
    """The dispatcher's visit: the follow-ups whose time came (a retry, a lost message)."""
    due = list(SmsMessage.objects.filter(sync_due_at__lte=now).values_list("pk", flat=True)[:200])
    if due:
        SmsMessage.objects.filter(pk__in=due).update(sync_due_at=now + SYNC_LEASE)
        for pk in due:
            sync_queue(pk)
    return (
        SmsMessage.objects.filter(sync_due_at__isnull=False)
        .order_by("sync_due_at")
        .values_list("sync_due_at", flat=True)
        .first()
    )
