"""What an incident is about, what happens to it, and how people hear of it: names, no models."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class IncidentKind(models.TextChoices):
    DEVICE_SILENT = "device_silent", _("Phone silent")
    RUNS_FAILED = "runs_failed", _("Action runs failed")
    BITRIX24_AUTH = "bitrix24_auth", _("Bitrix24 refuses the connection")
    BITRIX24_SCOPE = "bitrix24_scope", _("Bitrix24 scope missing")
    BITRIX24_TELEPHONY = "bitrix24_telephony", _("Bitrix24 refuses telephony")
    BITRIX24_DOWN = "bitrix24_down", _("Bitrix24 portal down")
    RULE_BROKEN = "rule_broken", _("Routing rule broken")
    ACTION_BROKEN = "action_broken", _("Scenario action broken")
    MISSED_SUMMARY = "missed_summary", _("Missed calls not returned (daily summary)")


CONNECTION_KINDS = (
    IncidentKind.BITRIX24_AUTH,
    IncidentKind.BITRIX24_SCOPE,
    IncidentKind.BITRIX24_TELEPHONY,
    IncidentKind.BITRIX24_DOWN,
)
# A notice, not a state: told once, never "recovered".
NOTICE_KINDS = frozenset({IncidentKind.MISSED_SUMMARY})


class Phase(models.TextChoices):
    """Which notice: the alert itself, or that it resolved."""

    OPENED = "opened", _("alert")
    CLEARED = "cleared", _("recovered")


class Channel(models.TextChoices):
    BITRIX24 = "bitrix24", _("Bitrix24 notification")
    EMAIL = "email", _("email")


class EventKind(models.TextChoices):
    OPENED = "opened", _("opened")
    CLEARED = "cleared", _("cleared")
    NOTICE_SENT = "notice_sent", _("notice sent")
    NOTICE_FAILED = "notice_failed", _("notice not sent")
