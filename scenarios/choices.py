"""The names a scenario is made of: triggers, action types and their options, and the internal
actions the server plans for a call's own lifecycle in Bitrix24. No models: validation and
planning read them without loading a row."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Trigger(models.TextChoices):
    """Which calls a scenario is for: one scenario per outcome, plus the unknown number."""

    INCOMING_ANSWERED = "incoming_answered", "Incoming call answered"
    INCOMING_MISSED = "incoming_missed", "Incoming call missed"
    INCOMING_REJECTED = "incoming_rejected", "Incoming call rejected"
    OUTGOING_ANSWERED = "outgoing_answered", "Outgoing call answered"
    OUTGOING_NOT_ANSWERED = (
        "outgoing_not_answered",
        "Outgoing call not answered (busy, no answer, failed, cancelled)",
    )
    UNKNOWN_NUMBER = "unknown_number", "Unknown number (caller not in the CRM)"


class ActionType(models.TextChoices):
    LOG_CALL = "log_call", "Log the call (timeline activity)"
    SHOW_CARD = "show_card", "Open the CRM card while it rings"
    NOTIFY = "notify", "Bitrix24 notification"
    CALLBACK_TASK = "callback_task", "Callback task"
    TRIGGER_AUTOMATION = "trigger_automation", "Trigger an automation rule"
    CREATE_LEAD = "create_lead", "Create a lead"
    CREATE_DEAL = "create_deal", "Create a deal with a new contact"
    TIMELINE_COMMENT = "timeline_comment", "Timeline comment"
    POST_CALL_SYNC = "post_call_sync", "Post-call sync (notes and recording)"
    SEND_SMS = "send_sms", "Send an SMS from the call's phone"


class Timing(models.TextChoices):
    IMMEDIATELY = "immediately", "Immediately"
    DELAY = "delay", "After a delay (from the end of the call)"
    AFTER_PREVIOUS = "after_previous", "After the previous action has finished (+ delay)"


class Hours(models.TextChoices):
    ALWAYS = "always", "Always"
    OPEN = "open", "Only during office hours"
    CLOSED = "closed", "Only outside office hours"


class Responsible(models.TextChoices):
    CRM = "crm", "The CRM responsible"
    AGENT = "agent", "The device's agent"
    ROUTED = "routed", "The routed user"
    FIXED = "fixed", "A fixed user"
    ROUND_ROBIN = "round_robin", "Round-robin over users"


class CardFor(models.TextChoices):
    ROUTED = "routed", "The routed user"
    AGENT = "agent", "The device's agent"
    BOTH = "both", "Both"


class AutomationTarget(models.TextChoices):
    ENTITY = "entity", "The caller's CRM entity"
    DEAL = "deal", "The caller's open deal (skipped when there is none)"


class Recipient(models.TextChoices):
    RESPONSIBLE = "responsible", "The responsible user"
    AGENT = "agent", "The device's agent"


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
    {ActionType.CALLBACK_TASK, ActionType.CREATE_LEAD, ActionType.CREATE_DEAL}
)
NEEDS_TEXT: dict[str, str] = {
    ActionType.NOTIFY: "text_template",
    ActionType.TIMELINE_COMMENT: "text_template",
    ActionType.SEND_SMS: "text_template",
    ActionType.CALLBACK_TASK: "title_template",
    ActionType.CREATE_LEAD: "title_template",
    ActionType.CREATE_DEAL: "title_template",
}
