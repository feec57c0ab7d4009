"""The names a scenario is made of: triggers, action types and their options, and the internal
actions the server plans for a call's own lifecycle in Bitrix24. No models: validation and
planning read them without loading a row."""

from __future__ import annotations

from enum import StrEnum

from django.db import models
from django.utils.translation import gettext_lazy as _


class Trigger(models.TextChoices):
    """Which calls a scenario is for: one scenario per outcome, plus the unknown number."""

    INCOMING_ANSWERED = "incoming_answered", _("Incoming call answered")
    INCOMING_MISSED = "incoming_missed", _("Incoming call missed")
    INCOMING_REJECTED = "incoming_rejected", _("Incoming call rejected")
    OUTGOING_ANSWERED = "outgoing_answered", _("Outgoing call answered")
    OUTGOING_NOT_ANSWERED = (
        "outgoing_not_answered",
        _("Outgoing call not answered (busy, no answer, failed, cancelled)"),
    )
    UNKNOWN_NUMBER = "unknown_number", _("Unknown number (caller not in the CRM)")


class ActionType(models.TextChoices):
    LOG_CALL = "log_call", _("Log the call (timeline activity)")
    SHOW_CARD = "show_card", _("Open the CRM card while it rings")
    NOTIFY = "notify", _("Bitrix24 notification")
    CALLBACK_TASK = "callback_task", _("Callback task")
    TRIGGER_AUTOMATION = "trigger_automation", _("Trigger an automation rule")
    CREATE_LEAD = "create_lead", _("Create a lead")
    CREATE_DEAL = "create_deal", _("Create a deal with a new contact")
    TIMELINE_COMMENT = "timeline_comment", _("Timeline comment")
    POST_CALL_SYNC = "post_call_sync", _("Post-call sync (notes and recording)")
    SEND_SMS = "send_sms", _("Send an SMS from the call's phone")
    SET_STATUS = "set_status", _("Change the lead status or the deal stage")
    SET_RESPONSIBLE = "set_responsible", _("Change the responsible person")
    SCHEDULE_CALL = "schedule_call", _("Schedule a call back (to-do)")
    UPDATE_FIELDS = "update_fields", _("Update fields of the entity or deal")
    WEBHOOK = "webhook", _("Call a webhook")


class Timing(models.TextChoices):
    IMMEDIATELY = "immediately", _("Immediately")
    DELAY = "delay", _("After a delay (from the end of the call)")
    AFTER_PREVIOUS = "after_previous", _("After the previous action has finished (+ delay)")
    BEFORE_DATE = "before_date", _("Before a date of the entity or its open deal (- delay)")


class Hours(models.TextChoices):
    ALWAYS = "always", _("Always")
    OPEN = "open", _("Only during office hours")
    CLOSED = "closed", _("Only outside office hours")


class Responsible(models.TextChoices):
    CRM = "crm", _("The CRM responsible")
    AGENT = "agent", _("The device's agent")
    ROUTED = "routed", _("The routed user")
    FIXED = "fixed", _("A fixed user")
    ROUND_ROBIN = "round_robin", _("Round-robin over users")


class CardFor(models.TextChoices):
    ROUTED = "routed", _("The routed user")
    AGENT = "agent", _("The device's agent")
    BOTH = "both", _("Both")


class AutomationTarget(models.TextChoices):
    """What an action works on (a trigger's target, a status, the responsible, fields, the date
    a "before a date" timing reads)."""

    ENTITY = "entity", _("The caller's CRM entity")
    DEAL = "deal", _("The caller's open deal (skipped when there is none)")


class Recipient(models.TextChoices):
    RESPONSIBLE = "responsible", _("The responsible user")
    AGENT = "agent", _("The device's agent")


class InternalAction(StrEnum):
    """Runs the server plans itself (not configured in a scenario): the call's registration and
    card, a late lookup, the recording's upload, a transfer and its follow-ups."""

    REGISTER_CALL = "register_call"
    HIDE_CARD = "hide_card"
    LOOKUP_CALLER = "lookup_caller"
    ATTACH_RECORDING = "attach_recording"
    TRANSFER_RESPONSIBLE = "transfer_responsible"
    COMPLETE_CALLBACK_TASK = "complete_callback_task"


# Types planned at ring time or as part of the call's own lifecycle in Bitrix24.
LIFECYCLE_TYPES = frozenset({ActionType.LOG_CALL, ActionType.SHOW_CARD})
CREATION_TYPES = frozenset({ActionType.CREATE_LEAD, ActionType.CREATE_DEAL})
# Types that need a Bitrix24 user chosen by a responsible strategy.
NEEDS_RESPONSIBLE = frozenset(
    {
        ActionType.CALLBACK_TASK,
        ActionType.CREATE_LEAD,
        ActionType.CREATE_DEAL,
        ActionType.SET_RESPONSIBLE,
        ActionType.SCHEDULE_CALL,
    }
)
# Types that act on the caller's entity or its open deal, as `target` says.
NEEDS_TARGET = frozenset(
    {ActionType.SET_STATUS, ActionType.SET_RESPONSIBLE, ActionType.UPDATE_FIELDS}
)
# A call back the caller is owed: one open per caller, completed once they are reached.
CALLBACK_TYPES = frozenset({ActionType.CALLBACK_TASK, ActionType.SCHEDULE_CALL})
NEEDS_TEXT: dict[str, str] = {
    ActionType.NOTIFY: "text_template",
    ActionType.TIMELINE_COMMENT: "text_template",
    ActionType.SEND_SMS: "text_template",
    ActionType.CALLBACK_TASK: "title_template",
    ActionType.SCHEDULE_CALL: "title_template",
    ActionType.CREATE_LEAD: "title_template",
    ActionType.CREATE_DEAL: "title_template",
}
