"""Every SMS, both ways, next to the calls: read-only for everyone (support staff included);
the SMS settings for the tenant's admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from calls.selectors import agent_label, agent_names
from crm.services import crm_entity_url
from sms.models import SmsEvent, SmsMessage, SmsSettings
from tenants.admin_utils import CrmCardAdmin, ReadOnlyAdmin


def _said(text: str) -> str:
    """A stored outcome or error (in English): a fixed one (sms.services, sms.sync) in the
    reader's language, any other as recorded."""
    return gettext(text) if text else ""


class SmsEventInline(admin.TabularInline):
    model = SmsEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("occurred_at", "type", "applied", "event_id", "received_at")
    ordering = ["occurred_at", "pk"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SmsMessage)
class SmsMessageAdmin(CrmCardAdmin, ReadOnlyAdmin):
    card_url = staticmethod(crm_entity_url)
    list_display = [
        "created_at",
        "direction",
        "phone_number",
        "device",
        "source",
        "status",
        "user",
        "short_text",
        "outcome_or_error",
    ]
    list_filter = [
        "direction",
        "source",
        "status",
        "device",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["phone_number", "text", "sms_id", "b24_message_id"]
    list_select_related = ["device"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "sms_id",
        "direction",
        "source",
        "status",
        "phone_number",
        "device",
        "text",
        "error_text",
        "user",
        "crm_card",
        "call_link",
        "command",
        "b24_message_id",
        "b24_status",
        "comment_id",
        "outcome_text",
        "sync_error",
        "created_at",
        "sent_at",
        "delivered_at",
        "failed_at",
        "received_at",
    ]
    fields = list(readonly_fields)
    inlines = [SmsEventInline]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        ids = SmsMessage.objects.exclude(b24_user_id=None).values_list("b24_user_id", flat=True)
        self._names = agent_names(user_ids=[i for i in ids.distinct()[:500] if i is not None])
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("Bitrix24 user"))
    def user(self, obj: SmsMessage) -> str:
        if obj.b24_user_id is None:
            return "-"
        names = getattr(self, "_names", None) or agent_names(user_ids=[obj.b24_user_id])
        return agent_label(obj.b24_user_id, names)

    @admin.display(description=_("text"))
    def short_text(self, obj: SmsMessage) -> str:
        return obj.text if len(obj.text) <= 60 else obj.text[:59] + "…"

    @admin.display(description=_("outcome"))
    def outcome_or_error(self, obj: SmsMessage) -> str:
        if obj.error or obj.outcome:
            return _said(obj.error or obj.outcome)
        return obj.sync_error or ""

    @admin.display(description=_("error"))
    def error_text(self, obj: SmsMessage) -> str:
        return _said(obj.error) or "-"

    @admin.display(description=_("outcome"))
    def outcome_text(self, obj: SmsMessage) -> str:
        return _said(obj.outcome) or "-"

    @admin.display(description=_("call"))
    def call_link(self, obj: SmsMessage) -> str:
        if obj.call_id is None:
            return "-"
        url = reverse("admin:calls_call_change", args=[obj.call_id])
        return format_html('<a href="{}">{}</a>', url, obj.call)


@admin.register(SmsSettings)
class SmsSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "mobile_only", "once_per_hours", "unknown_sender"]
    fields = ["mobile_only", "once_per_hours", "unknown_sender"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not SmsSettings.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
