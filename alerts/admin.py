"""The alerts in the tenant admin: the settings (admins only) and the incidents with their
history (support staff may read them)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from alerts.choices import NOTICE_KINDS, Channel, EventKind
from alerts.models import AlertSettings, Incident, IncidentEvent
from alerts.notices import incident_description, recovery_description
from alerts.services import alert_settings_ensure
from calls.selectors import agent_label, agent_names
from scenarios.forms import UserIdsField
from tenants.admin_utils import ReadOnlyAdmin

# Why an incident cleared, as its history shows it.
CLEARED_REASONS = {
    "seen": _("the phone was heard from again"),
    "revoked": _("the phone was revoked"),
    "fixed": _("fixed"),
    "recovered": _("the connection works again"),
    "turned off": _("the alert was turned off"),
}


class AlertSettingsForm(forms.ModelForm):
    user_ids = UserIdsField(
        required=False,
        widget=forms.TextInput(attrs={"size": 80}),
        label=_("Bitrix24 users"),
        help_text=_(
            "Who gets a Bitrix24 notification for every alert and when it resolves: names or "
            "ids, comma-separated."
        ),
    )

    class Meta:
        model = AlertSettings
        fields = [
            "user_ids",
            "email",
            "device_silent",
            "device_silent_minutes",
            "runs_failed",
            "bitrix24_connection",
            "portal_down_minutes",
            "broken_config",
            "missed_summary",
        ]


@admin.register(AlertSettings)
class AlertSettingsAdmin(admin.ModelAdmin):
    """The one settings row: the list page opens it."""

    form = AlertSettingsForm
    fieldsets = [
        (_("Who is alerted"), {"fields": ["user_ids", "email"]}),
        (
            _("What for"),
            {
                "fields": [
                    "device_silent",
                    "device_silent_minutes",
                    "runs_failed",
                    "bitrix24_connection",
                    "portal_down_minutes",
                    "broken_config",
                    "missed_summary",
                ]
            },
        ),
        (_("Check"), {"fields": ["checked_at"]}),
    ]
    readonly_fields = ["checked_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        settings_row = alert_settings_ensure()
        return HttpResponseRedirect(
            reverse("admin:alerts_alertsettings_change", args=[settings_row.pk])
        )

    def save_model(self, request: HttpRequest, obj: AlertSettings, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not obj.recipients:
            messages.warning(
                request,
                gettext("No one is alerted: choose Bitrix24 users or an email address."),
            )
        elif not obj.any_alert:
            messages.warning(request, gettext("Every alert is off: nothing is checked."))


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("open", _("Open")),
            ("pending", _("Pending (not alerted yet)")),
            ("cleared", _("Cleared")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        now = timezone.now()
        if self.value() == "open":
            return queryset.filter(cleared_at__isnull=True, alert_at__lte=now)
        if self.value() == "pending":
            return queryset.filter(cleared_at__isnull=True, alert_at__gt=now)
        if self.value() == "cleared":
            return queryset.filter(cleared_at__isnull=False)
        return queryset


def _state(incident: Incident) -> str:
    if incident.cleared_at is not None:
        return gettext("Cleared")
    if incident.alert_at > timezone.now():
        return gettext("Pending (not alerted yet)")
    return gettext("Open")


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("at", "kind", "phase", "channel", "what")
    ordering = ["at", "pk"]
    verbose_name = _("history")
    verbose_name_plural = _("history")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("text"))
    def what(self, obj: IncidentEvent) -> str:
        if obj.kind == EventKind.CLEARED:
            reason = (obj.details or {}).get("reason", "")
            return str(CLEARED_REASONS.get(reason, reason))
        if obj.kind == EventKind.NOTICE_SENT and obj.channel == Channel.BITRIX24:
            ids = [int(user) for user in (obj.details or {}).get("users") or {}]
            names = agent_names(user_ids=ids)
            users = ", ".join(agent_label(user, names) for user in ids)
            return format_html(
                "{}<br><small>{}</small>",
                obj.text,
                gettext("Bitrix24 users: %(users)s") % {"users": users},
            )
        if obj.kind == EventKind.NOTICE_SENT:
            return format_html(
                "{}<br><small>{}</small>",
                obj.text,
                gettext("To: %(address)s") % {"address": (obj.details or {}).get("to", "")},
            )
        return obj.text


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    """What the checks found, open or cleared, with what happened to each."""

    list_display = ["description", "kind", "state", "opened_at", "notified_at", "cleared_at"]
    list_filter = [StateFilter, "kind", "opened_at"]
    search_fields = ["subject", "subject_key"]
    date_hierarchy = "opened_at"
    inlines = [IncidentEventInline]
    fields = readonly_fields = (
        "kind",
        "subject",
        "state",
        "description",
        "recovery",
        "opened_at",
        "alert_at",
        "notified_at",
        "cleared_at",
        "details_shown",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Incident]:
        # Open incidents first, then the latest.
        return (
            super()
            .get_queryset(request)
            .order_by(F("cleared_at").desc(nulls_first=True), "-opened_at", "-pk")
        )

    @admin.display(description=_("what"))
    def description(self, obj: Incident) -> str:
        return incident_description(obj)

    @admin.display(description=_("state"))
    def state(self, obj: Incident) -> str:
        return _state(obj)

    @admin.display(description=_("recovery"))
    def recovery(self, obj: Incident) -> str:
        if obj.cleared_at is None or obj.kind in NOTICE_KINDS:
            return "-"
        return recovery_description(obj)

    @admin.display(description=_("details"))
    def details_shown(self, obj: Incident) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.details, indent=2, ensure_ascii=False, default=str)
        )
