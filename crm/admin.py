from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy, ngettext

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
        label=gettext_lazy("New webhook URL"),
        widget=forms.PasswordInput(render_value=False),
        help_text=gettext_lazy(
            "Leave empty to keep the stored URL; it is never shown in clear after saving."
        ),
    )
    new_client_secret = forms.CharField(
        required=False,
        label=gettext_lazy("New client secret"),
        widget=forms.PasswordInput(render_value=False),
        help_text=gettext_lazy(
            "The local application's secret; leave empty to keep the stored one."
        ),
    )
    new_events_token = forms.CharField(
        required=False,
        label=gettext_lazy("New events token"),
        widget=forms.PasswordInput(render_value=False),
        help_text=gettext_lazy(
            "Webhook connection: the application token Bitrix24 shows for the outbound "
            "webhook you created (event ONEXTERNALCALLSTART, handler: the events URL above). "
            "Leave empty to keep the stored one."
        ),
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
            self.add_error("new_webhook_url", gettext("The webhook mode needs a webhook URL."))
        if mode == Bitrix24Connection.AuthMode.OAUTH and not data.get("oauth_client_id"):
            self.add_error(
                "oauth_client_id", gettext("The OAuth mode needs the application's client id.")
            )
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
        (
            gettext_lazy("Inbound webhook"),
            {"fields": ["webhook_url_masked", "new_webhook_url"]},
        ),
        (
            gettext_lazy("Local OAuth application"),
            {
                "fields": [
                    "oauth_client_id",
                    "client_secret_state",
                    "new_client_secret",
                    "oauth_token_url",
                    "oauth_state",
                ],
                "description": gettext_lazy(
                    "Create a local application in Bitrix24 (Developer resources > "
                    "Other > Local application, 'Uses only API', scopes crm, telephony, user, "
                    "im, task, and optionally department and timeman) with the installation "
                    "path https://<this host>/bitrix24/install/."
                ),
            },
        ),
        (
            gettext_lazy("Bitrix24 calling SIMtrix (click-to-call, CRM changes)"),
            {
                "fields": [
                    "events_url",
                    "events_state",
                    "events_token_state",
                    "new_events_token",
                    "external_lines",
                    "sms_provider_state",
                ],
                "description": gettext_lazy(
                    "OAuth application: SIMtrix binds its events when the "
                    "application is installed. Inbound webhook: create an outbound webhook in "
                    "Bitrix24 (Developer resources > Other > Outbound webhook) with the events "
                    "URL below as its handler and the event ONEXTERNALCALLSTART (and, so cached "
                    "caller names follow CRM edits, ONCRMCONTACTUPDATE, ONCRMCOMPANYUPDATE, "
                    "ONCRMLEADUPDATE), then paste its application token here."
                ),
            },
        ),
        (
            gettext_lazy("Limits and lookup"),
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
        (
            gettext_lazy("Status"),
            {"fields": ["scopes", "checked_at", "directory_synced_at", "updated_at"]},
        ),
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
                request,
                gettext("The directory (users, pipelines, stages) is syncing in the background."),
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Bitrix24Connection.objects.exists() and super().has_add_permission(request)

    @admin.display(description=gettext_lazy("Status"))
    def health(self, obj: Bitrix24Connection) -> str:
        if obj.last_error:
            return format_html('<strong style="color:#ba2121">{}</strong>', obj.last_error)
        if obj.last_ok_at or obj.checked_at:
            return gettext("OK")
        return gettext("Not checked yet")

    @admin.display(description=gettext_lazy("Client secret"))
    def client_secret_state(self, obj: Bitrix24Connection) -> str:
        return gettext("stored (hidden)") if obj.oauth_client_secret else gettext("not set")

    @admin.display(description=gettext_lazy("Installation"))
    def oauth_state(self, obj: Bitrix24Connection) -> str:
        if not obj.oauth_access_token:
            return gettext("not installed (no tokens received yet)")
        if not obj.oauth_expires_at:
            return gettext("installed on %(portal)s; access token expiry unknown") % {
                "portal": obj.portal_domain
            }
        return gettext("installed on %(portal)s; access token expires %(time)s") % {
            "portal": obj.portal_domain,
            "time": _when(obj.oauth_expires_at),
        }

    @admin.display(description=gettext_lazy("SMS provider"))
    def sms_provider_state(self, obj: Bitrix24Connection) -> str:
        if obj.auth_mode != Bitrix24Connection.AuthMode.OAUTH:
            return gettext("not available with an inbound webhook. %(explanation)s") % {
                "explanation": WEBHOOK_EXPLANATION
            }
        if obj.sms_provider_error:
            return gettext("registering %(provider)s failed: %(error)s") % {
                "provider": repr(PROVIDER_CODE),
                "error": obj.sms_provider_error,
            }
        if obj.sms_provider_at:
            return gettext(
                "%(provider)s registered %(when)s; Bitrix24 posts its messages to %(url)s"
            ) % {
                "provider": repr(PROVIDER_CODE),
                "when": _when(obj.sms_provider_at),
                "url": sms_handler_url(),
            }
        return gettext(
            "not registered yet (it is, with the events, when the application is installed)"
        )

    @admin.display(description=gettext_lazy("Events URL"))
    def events_url(self, obj: Bitrix24Connection) -> str:
        return events_handler_url() or gettext("(the tenant has no domain)")

    @admin.display(description=gettext_lazy("Events"))
    def events_state(self, obj: Bitrix24Connection) -> str:
        parts = []
        if obj.uninstalled_at:
            parts.append(
                gettext("application uninstalled %(when)s") % {"when": _when(obj.uninstalled_at)}
            )
        if obj.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
            if obj.events_bind_error:
                parts.append(
                    gettext("binding failed: %(error)s") % {"error": obj.events_bind_error}
                )
            elif obj.events_bound_at:
                count = len(obj.events_bound)
                parts.append(
                    ngettext(
                        "%(count)d event bound %(when)s", "%(count)d events bound %(when)s", count
                    )
                    % {"count": count, "when": _when(obj.events_bound_at)}
                )
            else:
                parts.append(gettext("not bound yet (install the application)"))
        parts.append(
            gettext("last event received %(when)s") % {"when": _when(obj.last_event_at)}
            if obj.last_event_at
            else gettext("no event received yet")
        )
        if obj.last_event_refused_at and (
            not obj.last_event_at or obj.last_event_refused_at > obj.last_event_at
        ):
            parts.append(
                gettext("an event with a wrong token was refused %(when)s")
                % {"when": _when(obj.last_event_refused_at)}
            )
        return "; ".join(parts)

    @admin.display(description=gettext_lazy("Events token"))
    def events_token_state(self, obj: Bitrix24Connection) -> str:
        if obj.auth_mode == Bitrix24Connection.AuthMode.OAUTH:
            return (
                gettext("the application's (received at installation)")
                if obj.oauth_application_token
                else gettext("none yet: install the application")
            )
        if obj.events_token:
            return gettext("stored (hidden)")
        return gettext("not set: events are refused")

    @admin.display(description=gettext_lazy("External lines"))
    def external_lines(self, obj: Bitrix24Connection) -> str:
        lines = ", ".join(f"{number} ({name})" for number, name in (obj.lines or {}).items())
        state = lines or gettext("none registered")
        if obj.lines_sync_error:
            return gettext("%(lines)s; last sync failed: %(error)s") % {
                "lines": state,
                "error": obj.lines_sync_error,
            }
        if obj.lines_synced_at:
            return gettext("%(lines)s; synced %(when)s") % {
                "lines": state,
                "when": _when(obj.lines_synced_at),
            }
        return state

    @admin.action(
        description=gettext_lazy("Bind the events and the SMS provider again (OAuth application)"),
        permissions=["change"],
    )
    def bind_events(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        try:
            bound = events_bind()
            provider = sms_provider_register() if bound else False
        except Bitrix24Error as exc:
            messages.error(
                request, gettext("Binding the events failed: %(error)s") % {"error": exc.display()}
            )
            return
        if bound:
            messages.success(
                request,
                ngettext(
                    "Bound %(count)d event to %(url)s.",
                    "Bound %(count)d events to %(url)s.",
                    len(bound),
                )
                % {"count": len(bound), "url": events_handler_url()},
            )
        if provider:
            messages.success(
                request,
                gettext("SMS provider %(provider)s registered: %(url)s.")
                % {"provider": repr(PROVIDER_CODE), "url": sms_handler_url()},
            )
        else:
            messages.warning(
                request,
                gettext(
                    "Only an OAuth application binds events; a webhook connection uses the "
                    "outbound webhook its admin created."
                ),
            )

    @admin.action(
        description=gettext_lazy("Test the connection (and its scopes)"), permissions=["change"]
    )
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        check = connection_test()
        if check.ok:
            messages.success(
                request,
                gettext("Connected. Scopes: %(scopes)s.") % {"scopes": ", ".join(check.scopes)},
            )
        else:
            messages.error(
                request, gettext("Bitrix24 connection failed: %(error)s") % {"error": check.error}
            )
        for warning in check.warnings:
            messages.warning(request, warning)

    @admin.action(
        description=gettext_lazy("Sync the directory now (users, pipelines, stages)"),
        permissions=["change"],
    )
    def sync_directory(self, request: HttpRequest, queryset: QuerySet[Bitrix24Connection]) -> None:
        try:
            result = directory_sync()
        except Bitrix24Error as exc:
            messages.error(
                request, gettext("Directory sync failed: %(error)s") % {"error": exc.display()}
            )
            return
        counts = {
            "users": ngettext("%(count)d user", "%(count)d users", result.users)
            % {"count": result.users},
            "pipelines": ngettext("%(count)d pipeline", "%(count)d pipelines", result.pipelines)
            % {"count": result.pipelines},
            "stages": ngettext("%(count)d stage", "%(count)d stages", result.stages)
            % {"count": result.stages},
            "lead_statuses": ngettext(
                "%(count)d lead status", "%(count)d lead statuses", result.lead_statuses
            )
            % {"count": result.lead_statuses},
            "sources": ngettext("%(count)d source", "%(count)d sources", result.lead_sources)
            % {"count": result.lead_sources},
        }
        removed = sum(result.removed.values())
        if removed:
            message = ngettext(
                "Synced %(users)s, %(pipelines)s, %(stages)s, %(lead_statuses)s, %(sources)s; "
                "%(removed)d no longer exists in Bitrix24.",
                "Synced %(users)s, %(pipelines)s, %(stages)s, %(lead_statuses)s, %(sources)s; "
                "%(removed)d no longer exist in Bitrix24.",
                removed,
            ) % {**counts, "removed": removed}
        else:
            message = (
                gettext(
                    "Synced %(users)s, %(pipelines)s, %(stages)s, %(lead_statuses)s, %(sources)s."
                )
                % counts
            )
        messages.success(request, message)


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
    return f"{timezone.localtime(at):%Y-%m-%d %H:%M}" if at else gettext("never")


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
