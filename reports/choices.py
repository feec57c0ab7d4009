"""The names the reports give what they count: no models, no queries."""

from __future__ import annotations

from django.db import models
from django.utils.translation import pgettext_lazy


class CallbackTaskState(models.TextChoices):
    """Where a missed call's callback task is, as SIMtrix knows it (scenarios' ActionRun)."""

    NONE = "none", pgettext_lazy("callback task", "no callback task")
    PLANNED = "planned", pgettext_lazy("callback task", "planned")
    OPEN = "open", pgettext_lazy("callback task", "open in Bitrix24")
    COMPLETED = "completed", pgettext_lazy("callback task", "completed")
    SKIPPED = "skipped", pgettext_lazy("callback task", "skipped")
    FAILED = "failed", pgettext_lazy("callback task", "failed")
    CANCELLED = "cancelled", pgettext_lazy("callback task", "cancelled")
