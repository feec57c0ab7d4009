"""The reports' filters: the period (local days), a line, an agent (picked by name)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy, pgettext_lazy

from calls.models import Device
from calls.selectors import agent_label, agent_names
from reports.periods import MAX_DAYS, Period, PeriodKind, period_for
from tenants.context import tenant_timezone


@dataclass(frozen=True)
class ReportFilters:
    period: Period
    device_ids: list[int] | None
    user_ids: list[int] | None

    @property
    def window(self) -> dict[str, Any]:
        """The selectors' keyword arguments."""
        return {
            "since": self.period.since,
            "until": self.period.until,
            "device_ids": self.device_ids,
            "user_ids": self.user_ids,
        }


class ReportFilterForm(forms.Form):
    period = forms.ChoiceField(
        label=gettext_lazy("Period"), choices=PeriodKind.choices, required=False
    )
    first = forms.DateField(
        label=pgettext_lazy("date range", "From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    last = forms.DateField(
        label=pgettext_lazy("date range", "To"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    line = forms.TypedChoiceField(
        label=gettext_lazy("Line"), coerce=int, required=False, empty_value=None
    )
    agent = forms.TypedChoiceField(
        label=gettext_lazy("Agent"), coerce=int, required=False, empty_value=None
    )

    DEFAULT = PeriodKind.LAST_7

    def __init__(self, data: Any = None, *, today: date | None = None) -> None:
        if data is not None and not data.get("period"):
            data = data.copy()  # the period shown is the one reported: the default
            data["period"] = self.DEFAULT
        super().__init__(data)
        self.zone = tenant_timezone()
        self.today = today or timezone.now().astimezone(ZoneInfo(self.zone)).date()
        lines = list(Device.objects.order_by("name", "pk").values_list("pk", "name"))
        line_field = self.fields["line"]
        assert isinstance(line_field, forms.TypedChoiceField)
        line_field.choices = [("", gettext("All lines")), *lines]
        ids = sorted(set(Device.objects.values_list("bitrix24_user_id", flat=True)))
        names = agent_names(user_ids=ids)
        agents = sorted(((uid, agent_label(uid, names)) for uid in ids), key=lambda c: c[1])
        agent_field = self.fields["agent"]
        assert isinstance(agent_field, forms.TypedChoiceField)
        agent_field.choices = [("", gettext("All agents")), *agents]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("period") or self.DEFAULT
        cleaned["period"] = kind
        first, last = cleaned.get("first"), cleaned.get("last")
        if kind == PeriodKind.CUSTOM:
            if first is None or last is None:
                raise forms.ValidationError(
                    gettext("A custom range needs both its first and its last day."),
                    code="custom_range_incomplete",
                )
            if last < first:
                raise forms.ValidationError(
                    gettext("The range ends before it begins: swap the two days."),
                    code="custom_range_reversed",
                )
            if (last - first).days + 1 > MAX_DAYS:
                raise forms.ValidationError(
                    gettext("A range is at most %(days)d days long.") % {"days": MAX_DAYS},
                    code="custom_range_too_long",
                )
        return cleaned

    def filters(self) -> ReportFilters:
        """The filters of a valid form (the default period when nothing was asked)."""
        cleaned = self.cleaned_data
        period = period_for(
            cleaned["period"],
            today=self.today,
            zone=self.zone,
            first=cleaned.get("first"),
            last=cleaned.get("last"),
        )
        line, agent = cleaned.get("line"), cleaned.get("agent")
        return ReportFilters(
            period=period,
            device_ids=[line] if line is not None else None,
            user_ids=[agent] if agent is not None else None,
        )
