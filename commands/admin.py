"""Support staff's view of click-to-calls and of the commands the phones were given."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from calls.selectors import agent_label, agent_names
from commands.models import Command, Dial
from crm.services import crm_entity_url
from tenants.admin_utils import CrmCardAdmin, ReadOnlyAdmin


@admin.register(Dial)
class DialAdmin(CrmCardAdmin, ReadOnlyAdmin):
    card_url = staticmethod(crm_entity_url)
    list_display = ["created_at", "phone_number", "user", "device", "status", "line_reason"]
    list_filter = ["status"]
    search_fields = ["phone_number", "b24_call_id"]
    list_select_related = ["device"]
    readonly_fields = [
        "created_at",
        "phone_number",
        "user",
        "line_number",
        "crm_card",
        "device",
        "line_reason",
        "status",
        "failure_text",
        "call_link",
        "command",
        "b24_call_id",
        "closed_at",
        "attempts",
        "last_error",
    ]
    fields = list(readonly_fields)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        self._names = agent_names(
            user_ids=list(Dial.objects.values_list("b24_user_id", flat=True).distinct()[:500])
        )
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("Bitrix24 user"))
    def user(self, obj: Dial) -> str:
        names = getattr(self, "_names", None) or agent_names(user_ids=[obj.b24_user_id])
        return agent_label(obj.b24_user_id, names)

    @admin.display(description=_("failure"))
    def failure_text(self, obj: Dial) -> str:
        # Stored in English; a fixed reason (commands.dialing) is shown in the reader's language.
        return gettext(obj.failure) if obj.failure else "-"

    @admin.display(description=_("call"))
    def call_link(self, obj: Dial) -> str:
        if obj.call_id is None:
            return "-"
        url = reverse("admin:calls_call_change", args=[obj.call_id])
        return format_html('<a href="{}">{}</a>', url, obj.call)


@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "type",
        "device",
        "phone_number",
        "status",
        "delivery_count",
        "acked_at",
        "error",
    ]
    list_filter = ["type", "status"]
    search_fields = ["phone_number", "command_id"]
    list_select_related = ["device"]
    readonly_fields = [
        "command_id",
        "type",
        "device",
        "phone_number",
        "status",
        "payload",
        "created_at",
        "expires_at",
        "first_delivered_at",
        "delivery_count",
        "acked_at",
        "error",
    ]
    fields = list(readonly_fields)
