from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy

from crm.errors import Bitrix24Error
from crm.events import events_bind, events_handler_url
from crm.messageservice import (
    PROVIDER_CODE,
    WEBHOOK_EXPLANATION,
    sms_handler_url,
    sms_provider_register,
)
from crm.models import (
    Bitrix24Connection,
    Bitrix24User,
    Department,
    EntityField,
    InboundEvent,
    Intent,
    LeadSource,
    LeadStatus,
    Pipeline,
    RequestLog,
    Stage,
)
from crm.services import connection_test, directory_sync, directory_sync_later
from tenants.admin_utils import ObjectActionsAdmin, ReadOnlyAdmin


class ConnectionForm(forms.ModelForm):
    new_webhook_url = forms.CharField(
        required=False,
        label="New webhook URL",
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored URL; it is never shown in clear after saving.",
    )
    new_client_secret = forms.CharField(
        required=False,
        label="New client secret",
        widget=forms.PasswordInput(render_value=False),
        help_text="The local application's secret; leave empty to keep the stored one.",
    )
    new_events_token = forms.CharField(
        required=False,
        label="New events token",
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook connection: the application token Bitrix24 shows for the outbound "
        "webhook you created (event ONEXTERNALCALLSTART, handler: the events URL above). Leave "
        "empty to keep the stored one.",
    )

    class Meta:
        model = Bitrix24Connection
        fields = [
            "auth_mode",
            "oauth_client_id",
            "oauth_token_url",
            "rate_plan",
            "rate_limit_per_second",
            "rate_limit_burst",
            "lookup_budget_ms",
            "lookup_cache_ttl_s",
        ]

    def clean_new_webhook_url(self) -> str:
        value = self.cleaned_data["new_webhook_url"].strip()
        if value:
            Bitrix24Connection._meta.get_field("webhook_url").run_validators(value)
        return value

    def clean(self) -> dict[str, Any]:
        super().clean()  # ModelForm's marks the form for the unique checks
        data = self.cleaned_data
        mode = data.get("auth_mode")
        if mode == Bitrix24Connection.AuthMode.WEBHOOK and not (
            data.get("new_webhook_url") or self.instance.webhook_url
        ):
            self.add_error("new_webhook_url", "The webhook mode needs a webhook URL.")
        if mode == Bitrix24Connection.AuthMode.OAUTH and not data.get("oauth_client_id"):
            self.add_error("oauth_client_id", "The OAuth mode needs the application's client id.")
        return data

    def save(self, commit: bool = True) -> Bitrix24Connection:
        if self.cleaned_data.get("new_webhook_url"):
            url = self.cleaned_data["new_webhook_url"]
            self.instance.webhook_url = url if url.endswith("/") else f"{url}/"
        if self.cleaned_data.get("new_client_secret"):
            self.instance.oauth_client_secret = self.cleaned_data["new_client_secret"].strip()
        if self.cleaned_data.get("new_events_token"):
            self.instance.events_token = self.cleaned_data["new_events_token"].strip()
        return super().save(commit)


@admin.register(Bitrix24Connection)
class Bitrix24ConnectionAdmin(ObjectActionsAdmin):
    form = ConnectionForm
    list_display = ["__str__", "auth_mode", "health", "checked_at", "directory_synced_at"]
    readonly_fields = [
        "webhook_url_masked",
        "client_secret_state",
        "oauth_state",
        "health",
        "last_error_at",
        "last_ok_at",
        "scopes",
        "checked_at",
        "directory_synced_at",
        "updated_at",
        "events_url",
        "events_state",
        "events_token_state",
        "external_lines",
        "sms_provider_state",
    ]
    fieldsets = [
        (None, {"fields": ["auth_mode", "health", "last_error_at", "last_ok_at"]}),
        ("Inbound webhook", {"fields": ["webhook_url_masked", "new_webhook_url"]}),
        (
            "Local OAuth application",
            {
                "fields": [
                    "oauth_client_id",
                    "client_secret_state",
                    "new_client_secret",
                    "oauth_token_url",
                    "oauth_state",
                ],
                "description": "Create a local application in Bitrix24 (Developer resources > "
                "Other > Local application, 'Uses only API', scopes crm, telephony, user, im, "
                "task, and optionally department and timeman) with the installation path "
                "https://<this host>/bitrix24/install/.",
            },
        ),
        (
            "Bitrix24 calling SIMtrix (click-to-call, CRM changes)",
            {
                "fields": [
                    "events_url",
                    "events_state",
                    "events_token_state",
                    "new_events_token",
                    "external_lines",
                    "sms_provider_state",
                ],
                "description": "OAuth application: SIMtrix binds its events when the "
                "application is installed. Inbound webhook: create an outbound webhook in "
                "Bitrix24 (Developer resources > Other > Outbound webhook) with the events URL "
                "below as its handler and the event ONEXTERNALCALLSTART (and, so cached caller "
                "names follow CRM edits, ONCRMCONTACTUPDATE, ONCRMCOMPANYUPDATE, "
                "ONCRMLEADUPDATE), then paste its application token here.",
            },
        ),
        (
            "Limits and lookup",
            {
                "fields": [
                    "rate_plan",
                    "rate_limit_per_second",
                    "rate_limit_burst",
                    "lookup_budget_ms",
                    "lookup_cache_ttl_s",
                ]
            },
        ),
        ("Status", {"fields": ["scopes", "checked_at", "directory_synced_at", "updated_at"]}),
    ]
    actions = ["test_connection", "sync_directory", "bind_events"]
    # The connection's checks as buttons on its page, not only actions in the list.
    object_actions: ClassVar[list[tuple[str, Any]]] = [
        ("test_connection", gettext_lazy("Test connection")),
        ("sync_directory", gettext_lazy("Sync the directory now")),
        ("bind_events", gettext_lazy("Bind the events again")),
    ]

    def save_model(
        self, request: HttpRequest, obj: Bitrix24Connection, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if {"auth_mode"} & set(form.changed_data) or form.cleaned_data.get("new_webhook_url"):
            # Another portal, or another user's webhook: its users and pipelines, not the old.
            directory_sync_later()
            messages.info(
                request, "The directory (users, pipelines, stages) is syncing in the background."
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Bitrix24Connection.objects.exists() and super().has_add_permission(request)

    @admin.display(description="Status")
    def health(self, obj: Bitrix24Connection) -> str:
        if obj.last_error:
            return format_html('<strong style="color:#ba2121">{}</strong>', obj.last_error)
        if obj.last_ok_at or obj.checked_at:
            return "OK"
        return "Not checked yet"

    @admin.display(description="Client secret")
    def client_secret_state(self, obj: Bitrix24Connection) -> str:
        return "stored (hidden)" if obj.oauth_client_secret else "not set"

    @admin.display(description="Installation")
    def oauth_state(self, obj: Bitrix24Connection) -> str:
        if not obj.oauth_access_token:
            return "not installed (no tokens received yet)"
        expires = timezone.localtime(obj.oauth_expires_at) if obj.oauth_expires_at else None
        return (
            f"installed on {obj.portal_domain}; access token "
            f"{'expires ' + expires.strftime('%Y-%m-%d %H:%M') if expires else 'expiry unknown'}"
        )

    @admin.display(description="SMS provider")
    def sms_provider_state(self, obj: Bitrix24Connection) -> str:
        if obj.auth_mode != Bitrix24Connection.AuthMode.OAUTH:
            return f"not available with an inbound webhook. {WEBHOOK_EXPLANATION}"
        if obj.sms_provider_error:
            return f"registering {PROVIDER_CODE!r} failed: {obj.sms_provider_error}"
        if obj.sms_provider_at:
            return (
                f"{PROVIDER_CODE!r} registered {_when(obj.sms_provider_at)}; Bitrix24 posts its "
                f"messages to {sms_handler_url()}"
            )
        return "not registered yet (it is, with the events, when the application is installed)"

    @admin.display(description="Events URL")
    def events_url(self, obj: Bitrix24Connection) -> str:
        return events_handler_url() or "(the tenant has no domain)"

    @admin.display(description="Events")
    def events_state(self, obj: Bitrix24Connection) -> str:
        parts = []
        if obj.uninstalled_at:
            parts.append(f"application uninstalled {_when(obj.uninstalled_at)}")
        if obj.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
            if obj.events_bind_error:
                parts.append(f"binding failed: {obj.events_bind_error}")
            elif obj.events_bound_at:
                parts.append(f"{len(obj.events_bound)} events bound {_when(obj.events_bound_at)}")
            else:
                parts.append("not bound yet (install the application)")
        parts.append(
            f"last event received {_when(obj.last_event_at)}"
            if obj.last_event_at
            else "no event received yet"
        )
        if obj.last_event_refused_at and (
            not obj.last_event_at or obj.last_event_refused_at > obj.last_event_at
        ):
            parts.append(
                f"an event with a wrong token was refused {_when(obj.last_event_refused_at)}"
            )
        return "; ".join(parts)

    @admin.display(description="Events token")
    def events_token_state(self, obj: Bitrix24Connection) -> str:
        if obj.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
            return (
                "the application's (received at installation)"
                if obj.oauth_application_token
                else "none yet: install the application"
            )
        return "stored (hidden)" if obj.events_token else "not set: events are refused"

    @admin.display(description="External lines")
    def external_lines(self, obj: Bitrix24Connection) -> str:
        lines = ", ".join(f"{number} ({name})" for number, name in (obj.lines or {}).items())
        state = lines or "none registered"
        if obj.lines_sync_error:
            return f"{state}; last sync failed: {obj.lines_sync_error}"
        return f"{state}; synced {_when(obj.lines_synced_at)}" if obj.lines_synced_at else state

    @admin.action(
        description="Bind the events and the SMS provider again (OAuth application)",
        permissions=["change"],
    )
    def bind_events(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        try:
            bound = events_bind()
            provider = sms_provider_register() if bound else False
        except Bitrix24Error as exc:
            messages.error(request, f"Binding the events failed: {exc.display()}")
            return
        if bound:
            messages.success(request, f"Bound {len(bound)} events to {events_handler_url()}.")
        if provider:
            messages.success(
                request, f"SMS provider {PROVIDER_CODE!r} registered: {sms_handler_url()}."
            )
        else:
            messages.warning(
                request,
                "Only an OAuth application binds events; a webhook connection uses the "
                "outbound webhook its admin created.",
            )

    @admin.action(description="Test the connection (and its scopes)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        check = connection_test()
        if check.ok:
            messages.success(request, f"Connected. Scopes: {', '.join(check.scopes)}.")
        else:
            messages.error(request, f"Bitrix24 connection failed: {check.error}")
        for warning in check.warnings:
            messages.warning(request, warning)

    @admin.action(
        description="Sync the directory now (users, pipelines, stages)", permissions=["change"]
    )
    def sync_directory(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        try:
            result = directory_sync()
        except Bitrix24Error as exc:
            messages.error(request, f"Directory sync failed: {exc.display()}")
            return
        removed = sum(result.removed.values())
        messages.success(
            request,
            f"Synced {result.users} users, {result.pipelines} pipelines, {result.stages} stages, "
            f"{result.lead_statuses} lead statuses, {result.lead_sources} sources"
            + (f"; {removed} no longer exist in Bitrix24." if removed else "."),
        )


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "method",
        "http_status",
        "error_code",
        "duration_ms",
        "attempt",
        "is_batch",
        "call_id",
    ]
    list_filter = ["method", "http_status", "error_code", "is_batch", "auth_mode"]
    search_fields = ["method", "error_code", "error_description", "intent_key", "=call_id"]
    date_hierarchy = "created_at"
    list_select_related = ["parent"]
    readonly_fields = [
        "created_at",
        "method",
        "parent",
        "is_batch",
        "sub_methods",
        "attempt",
        "duration_ms",
        "http_status",
        "error_code",
        "error_description",
        "auth_mode",
        "call_id",
        "intent_key",
        "params",
    ]


@admin.register(Intent)
class IntentAdmin(ReadOnlyAdmin):
    list_display = ["key", "method", "status", "attempts", "updated_at"]
    list_filter = ["status", "method"]
    search_fields = ["key"]


@admin.register(Bitrix24User)
class Bitrix24UserAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "name",
        "email",
        "active",
        "timeman_status",
        "inner_phone",
        "removed",
        "seen_at",
    ]
    list_filter = ["active", "timeman_status", "removed"]
    search_fields = ["name", "email", "=id"]


@admin.register(Department)
class DepartmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "parent_id", "head_user_id", "removed"]
    list_filter = ["removed"]


@admin.register(Pipeline)
class PipelineAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "sort", "is_default", "removed"]
    list_filter = ["removed"]


@admin.register(Stage)
class StageAdmin(ReadOnlyAdmin):
    list_display = ["stage_id", "name", "pipeline", "semantics", "sort", "removed"]
    list_filter = ["pipeline", "semantics", "removed"]


@admin.register(LeadStatus)
class LeadStatusAdmin(ReadOnlyAdmin):
    list_display = ["status_id", "name", "semantics", "sort", "removed"]
    list_filter = ["removed"]


@admin.register(LeadSource)
class LeadSourceAdmin(ReadOnlyAdmin):
    list_display = ["source_id", "name", "sort", "removed"]
    list_filter = ["removed"]


@admin.register(EntityField)
class EntityFieldAdmin(ReadOnlyAdmin):
    list_display = ["entity_type", "name", "title", "type", "multiple", "custom", "removed"]
    list_filter = ["entity_type", "custom", "removed"]
    search_fields = ["name", "title"]


def _when(at: Any) -> str:
    return f"{timezone.localtime(at):%Y-%m-%d %H:%M}" if at else "never"


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event", "status", "attempts", "done_at", "error"]
    list_filter = ["status", "event"]
    readonly_fields = [
        "event",
        "handler_id",
        "data",
        "ts",
        "status",
        "result",
        "error",
        "attempts",
        "received_at",
        "next_attempt_at",
        "done_at",
    ]
