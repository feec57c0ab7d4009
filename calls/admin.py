from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy, ngettext

from calls.audio import CONTENT_TYPES
from calls.audit import call_audit_trail
from calls.handlers import TELEPHONY_REFUSED_NOTE
from calls.models import Call, CallEvent, CallSettings, Device
from calls.selectors import (
    agent_label,
    agent_names,
    call_settings_get,
    calls_matching_number,
    device_is_silent,
    devices_silent,
)
from calls.services import (
    call_settings_ensure,
    device_register,
    device_revoke,
    device_rotate_token,
    device_user_problem,
)
from common.phones import InvalidPhoneNumber, phone_to_e164
from crm.selectors import directory_users
from tenants.admin_utils import ObjectActionsAdmin, ReadOnlyAdmin, csv_response, qr_svg
from tenants.context import tenant_country, tenant_timezone


def bridge_server_url(request: HttpRequest) -> str:
    """The bridge API's address for this tenant's phones: SIMTRIX_BRIDGE_PUBLIC_URL, else the
    address this page was opened by."""
    template = settings.SIMTRIX_BRIDGE_PUBLIC_URL
    if template:
        return template.replace("{host}", request.get_host().split(":")[0])
    return request.build_absolute_uri("/api/bridge/v1/")


def bridge_server_unreachable(server: str) -> str:
    """Why a phone could not reach `server` (loopback, *.localhost), or ""."""
    host = (urlsplit(server).hostname or "").lower()
    if (
        host == "localhost"
        or host.endswith(".localhost")
        or host.startswith("127.")
        or host == "::1"
    ):
        return gettext(
            "A phone cannot reach %(host)s: it is this computer's own name. Open the admin by "
            "the address the phones use, or set SIMTRIX_BRIDGE_PUBLIC_URL."
        ) % {"host": host}
    return ""


def bridge_setup_uri(*, request: HttpRequest, token: str) -> str:
    """What the app scans: this tenant's API base URL and the device token."""
    server = bridge_server_url(request)
    return "simtrix://connect?" + urlencode({"server": server, "token": token})


def _token_page(
    request: HttpRequest, model_admin: admin.ModelAdmin, issued: list[tuple[Device, str]]
) -> TemplateResponse:
    cards = []
    for device, token in issued:
        uri = bridge_setup_uri(request=request, token=token)
        cards.append({"device": device, "token": token, "uri": uri, "qr_svg": qr_svg(uri)})
    context = {
        **model_admin.admin_site.each_context(request),
        "title": gettext("Device token - shown once"),
        "cards": cards,
        "opts": model_admin.model._meta,
        "server": bridge_server_url(request),
        "unreachable": bridge_server_unreachable(bridge_server_url(request)),
    }
    response = TemplateResponse(request, "admin/calls/device/token_issued.html", context)
    # The page holds a secret: never keep it in a browser or proxy cache.
    response["Cache-Control"] = "no-store"
    return response


class DeviceForm(forms.ModelForm):
    """The agent picked by name from the synced directory (an id only before the first sync);
    a user Bitrix24 does not have, or has deactivated, is refused."""

    class Meta:
        model = Device
        fields = ["name", "phone_number", "bitrix24_user_id", "main", "sms_default"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.bitrix24_user_id if self.instance.pk else None
        users = list(directory_users(active_only=False))
        if users:
            choices: list[tuple[Any, str]] = [("", "---------")]
            choices += [
                (
                    u.id,
                    f"{u.name} (#{u.id})"
                    if u.active
                    else gettext("%(name)s (#%(id)s, deactivated)") % {"name": u.name, "id": u.id},
                )
                for u in users
                if u.active or u.id == current
            ]
            if current and current not in {u.id for u in users}:
                choices.append(
                    (current, gettext("User #%(id)s (not in Bitrix24)") % {"id": current})
                )
            field = self.fields["bitrix24_user_id"]
            self.fields["bitrix24_user_id"] = forms.TypedChoiceField(
                label=field.label or gettext("Bitrix24 user"),
                choices=choices,
                coerce=int,
                help_text=gettext("The agent who carries this phone, from the Bitrix24 directory."),
            )

    def clean_bitrix24_user_id(self) -> int:
        user_id = int(self.cleaned_data["bitrix24_user_id"])
        problem = device_user_problem(user_id=user_id)
        if problem:
            raise forms.ValidationError(problem)
        return user_id

    def clean_phone_number(self) -> str:
        try:
            return phone_to_e164(self.cleaned_data["phone_number"], country=tenant_country())
        except InvalidPhoneNumber as exc:
            raise forms.ValidationError(str(exc)) from exc


class DeviceCreationForm(DeviceForm):
    class Meta(DeviceForm.Meta):
        fields = ["name", "phone_number", "bitrix24_user_id"]


class HeartbeatFilter(admin.SimpleListFilter):
    title = gettext_lazy("heartbeat")
    parameter_name = "heartbeat"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        minutes = call_settings_get().silent_after_minutes
        return [
            ("silent", gettext("Silent (> %(minutes)s min)") % {"minutes": minutes}),
            ("alive", gettext("Alive")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> QuerySet[Device]:
        silent = devices_silent().values("pk")
        if self.value() == "silent":
            return queryset.filter(pk__in=silent)
        if self.value() == "alive":
            return queryset.filter(revoked_at__isnull=True).exclude(pk__in=silent)
        return queryset


@admin.register(Device)
class DeviceAdmin(ObjectActionsAdmin):
    list_display = [
        "name",
        "phone_number",
        "agent",
        "main",
        "token_hint",
        "active",
        "heartbeat",
        "last_seen_at",
        "app_version",
    ]
    list_filter = [HeartbeatFilter, ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "phone_number"]
    readonly_fields = ["token_hint", "revoked_at", "last_seen_at", "app_version", "created_at"]
    actions = ["revoke_tokens", "rotate_tokens"]

    def get_form(
        self, request: HttpRequest, obj: Device | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        kwargs["form"] = DeviceCreationForm if obj is None else DeviceForm
        return super().get_form(request, obj, change, **kwargs)

    # Buttons on the device's own page, not only actions in the list.
    object_actions: ClassVar[list[tuple[str, Any]]] = [
        ("rotate_tokens", gettext_lazy("Issue a new token")),
        ("revoke_tokens", gettext_lazy("Revoke")),
    ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Calls point at their device for the audit trail: revoke instead of deleting.
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        self._names = agent_names(
            user_ids=list(Device.objects.values_list("bitrix24_user_id", flat=True)[:1000])
        )
        return super().changelist_view(request, extra_context)

    @admin.display(description=gettext_lazy("Agent (Bitrix24 user)"), ordering="bitrix24_user_id")
    def agent(self, obj: Device) -> str:
        names = getattr(self, "_names", None) or agent_names(user_ids=[obj.bitrix24_user_id])
        return agent_label(obj.bitrix24_user_id, names)

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        device, token = device_register(
            name=obj.name,
            phone_number=obj.phone_number,
            bitrix24_user_id=obj.bitrix24_user_id,
            country=tenant_country(),
        )
        obj.pk = device.pk
        obj.refresh_from_db()
        request._simtrix_issued_token = token  # type: ignore[attr-defined]  # for response_add

    def response_add(self, request: HttpRequest, obj: Device, post_url_continue: Any = None) -> Any:
        token = getattr(request, "_simtrix_issued_token", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        return _token_page(request, self, [(obj, token)])

    @admin.display(boolean=True, description=gettext_lazy("Active"))
    def active(self, obj: Device) -> bool:
        return obj.is_active

    @admin.display(description=gettext_lazy("Heartbeat"))
    def heartbeat(self, obj: Device) -> str:
        if not obj.is_active:
            return "-"
        if device_is_silent(device=obj):
            return format_html('<strong style="color:#ba2121">{}</strong>', gettext("silent"))
        return gettext("alive")

    @admin.action(
        description=gettext_lazy("Revoke the token of the selected devices"),
        permissions=["change"],
    )
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for device in queryset:
            device_revoke(device=device)
        count = queryset.count()
        messages.success(
            request,
            ngettext("Revoked %(count)d device token.", "Revoked %(count)d device tokens.", count)
            % {"count": count},
        )

    @admin.action(
        description=gettext_lazy("Issue a new token (the old one stops working)"),
        permissions=["change"],
    )
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet[Device]) -> TemplateResponse:
        issued = [(device, device_rotate_token(device=device)) for device in queryset]
        return _token_page(request, self, issued)


@admin.register(CallSettings)
class CallSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "upload_limit_mb",
        "retention_days",
        "silent_after_minutes",
        "throttle_per_minute",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        settings = call_settings_ensure()
        return HttpResponseRedirect(reverse("admin:calls_callsettings_change", args=[settings.pk]))

    def save_model(self, request: HttpRequest, obj: CallSettings, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        call_settings_ensure()  # forgets the per-process copy


# --- The call log ---------------------------------------------------------------------------


class KnownCallerFilter(admin.SimpleListFilter):
    title = gettext_lazy("caller")
    parameter_name = "caller"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("known", gettext("Known (in the CRM)")),
            ("unknown", gettext("Unknown")),
            ("unresolved", gettext("Not looked up / Bitrix24 unavailable")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        if self.value() == "known":
            return queryset.filter(crm_status="found")
        if self.value() == "unknown":
            return queryset.filter(crm_status="not_found")
        if self.value() == "unresolved":
            return queryset.exclude(crm_status__in=["found", "not_found"])
        return queryset


class AgentFilter(admin.SimpleListFilter):
    title = gettext_lazy("agent")
    parameter_name = "agent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        ids = sorted(set(Device.objects.values_list("bitrix24_user_id", flat=True)))
        names = agent_names(user_ids=ids)
        return [
            (
                str(user_id),
                names.get(user_id) or gettext("Bitrix24 user %(id)s") % {"id": user_id},
            )
            for user_id in ids
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(device__bitrix24_user_id=int(value))
        return queryset


class DateRangeFilter(admin.ListFilter):
    """Calls that started between two dates (inclusive), in the tenant's time zone."""

    title = gettext_lazy("date range")
    template = "admin/calls/date_range_filter.html"
    parameters = ("started_from", "started_to")

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any):
        super().__init__(request, params, model, model_admin)
        self.values: dict[str, str] = {}
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                self.values[name] = value[-1] if isinstance(value, list) else value
        self.request = request

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def _bound(self, name: str) -> datetime | None:
        try:
            day = date.fromisoformat(self.values.get(name, ""))
        except ValueError:
            return None
        if name == "started_to":
            day += timedelta(days=1)
        return timezone.make_aware(datetime.combine(day, time.min), _tenant_zone())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        start, end = self._bound("started_from"), self._bound("started_to")
        if start:
            queryset = queryset.filter(started_at__gte=start)
        if end:
            queryset = queryset.filter(started_at__lt=end)
        return queryset

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        yield {
            "values": self.values,
            "others": [
                (key, value)
                for key, value in changelist.get_filters_params().items()
                if key not in self.parameters
            ],
            "clear_url": changelist.get_query_string(remove=list(self.parameters)),
        }


def _tenant_zone() -> Any:
    return ZoneInfo(tenant_timezone())


CSV_COLUMNS = [
    ("started_at", gettext_lazy("Started")),
    ("direction", gettext_lazy("Direction")),
    ("phone_number", gettext_lazy("Number")),
    ("outcome", gettext_lazy("Outcome")),
    ("duration_seconds", gettext_lazy("Duration (s)")),
    ("device", gettext_lazy("Device")),
    ("agent", gettext_lazy("Agent (Bitrix24 user)")),
    ("caller", gettext_lazy("Caller")),
    ("crm_status", gettext_lazy("CRM lookup")),
    ("crm_entity", gettext_lazy("CRM entity")),
    ("b24_log_mode", gettext_lazy("Logged as")),
    ("call_id", gettext_lazy("Bridge call id")),
]


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    change_list_template = "admin/calls/call/change_list.html"
    change_form_template = "admin/calls/call/change_form.html"
    list_display = [
        "started_at",
        "direction",
        "number",
        "outcome",
        "duration_seconds",
        "device",
        "caller",
        "bitrix24",
    ]
    list_filter = [
        "direction",
        "outcome",
        "status",
        "device",
        AgentFilter,
        DateRangeFilter,
        KnownCallerFilter,
        "b24_log_mode",
    ]
    list_select_related = ["device"]
    search_fields = ["call_id"]
    search_help_text = gettext_lazy(
        "A phone number in any format (+48 600 111 222, 600111222...) or a call id."
    )
    date_hierarchy = "started_at"
    list_per_page = 50
    exclude = ["crm", "route"]
    readonly_fields = ["crm_pretty", "route_pretty"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # The raw lookup and route (the bridge's format) folded away: the page tells them.
        raw = ["crm_pretty", "route_pretty"]
        fields = [name for name in self.get_fields(request, obj) if name not in raw]
        return [
            (None, {"fields": fields}),
            (
                gettext_lazy("Raw data, as the bridge sees it"),
                {"classes": ["collapse"], "fields": raw},
            ),
        ]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Call], search_term: str
    ) -> tuple[QuerySet[Call], bool]:
        if not search_term.strip():
            return queryset, False
        by_number = calls_matching_number(queryset=queryset, text=search_term)
        by_id = queryset.filter(call_id=search_term.strip())
        return (by_number | by_id).distinct(), True

    @admin.display(description=gettext_lazy("Number"), ordering="phone_number")
    def number(self, obj: Call) -> str:
        return obj.phone_number or obj.phone_raw

    @admin.display(description=gettext_lazy("Caller"), ordering="crm_status")
    def caller(self, obj: Call) -> str:
        entity = (obj.crm or {}).get("entity") or {}
        if entity:
            label = f"{entity.get('name', '')} ({entity.get('type')} {entity.get('id')})"
            if entity.get("url"):
                # The card in Bitrix24, where the caller's history is.
                return format_html(
                    '<a href="{}" target="_blank" rel="noopener">{}</a>', entity["url"], label
                )
            return label
        shown = {
            "not_found": gettext("not found"),
            "pending": gettext("pending"),
            "unavailable": gettext("unavailable"),
        }
        return shown.get(obj.crm_status, obj.crm_status) or "-"

    @admin.display(description=gettext_lazy("Bitrix24"))
    def bitrix24(self, obj: Call) -> str:
        if obj.b24_log_mode == Call.LogMode.ACTIVITY:
            return gettext("activity (telephony refused)")
        if obj.b24_finished_at:
            return gettext("finished")
        if obj.b24_call_id:
            return gettext("registered")
        return "-"

    @admin.display(description=gettext_lazy("CRM lookup"))
    def crm_pretty(self, obj: Call) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.crm, indent=2, ensure_ascii=False))

    @admin.display(description=gettext_lazy("Route"))
    def route_pretty(self, obj: Call) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.route, indent=2, ensure_ascii=False))

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv_view),
                name="calls_call_export",
            ),
            path(
                "<int:call_pk>/recording/",
                self.admin_site.admin_view(self.recording_view),
                name="calls_call_recording",
            ),
        ]
        return own + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        recent = timezone.now() - timedelta(days=7)
        if Call.objects.filter(
            b24_log_mode=Call.LogMode.ACTIVITY, b24_finished_at__gte=recent
        ).exists():
            messages.warning(request, gettext(TELEPHONY_REFUSED_NOTE))
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        call = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if call is not None:
            extra["audit"] = call_audit_trail(call=call)
            extra["recording_url"] = (
                reverse("admin:calls_call_recording", args=[call.pk])
                if extra["audit"]["recording"] and extra["audit"]["recording"].playable
                else ""
            )
        return super().change_view(request, object_id, form_url, extra)

    def export_csv_view(self, request: HttpRequest) -> StreamingHttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        queryset = changelist.get_queryset(request).select_related("device")
        # The tenant's zone, taken now: the rows are written after this view has returned.
        zone = timezone.get_current_timezone()

        def rows() -> Iterator[list[Any]]:
            for call in queryset.iterator(chunk_size=500):
                yield _csv_row(call, zone=zone)

        return csv_response(
            name="calls", header=[str(label) for _name, label in CSV_COLUMNS], rows=rows
        )

    def recording_view(self, request: HttpRequest, call_pk: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        call = Call.objects.filter(pk=call_pk).select_related("recording").first()
        recording = getattr(call, "recording", None) if call else None
        playable = recording.playable if recording is not None else None
        if playable is None:
            raise Http404("No recording")

        audio_format = (
            "mp3" if recording.converted else recording.original_format  # type: ignore[union-attr]
        )
        return FileResponse(
            playable.open("rb"), content_type=CONTENT_TYPES.get(audio_format, "audio/mpeg")
        )


def _csv_row(call: Call, *, zone: tzinfo) -> list[Any]:
    entity = (call.crm or {}).get("entity") or {}
    values = {
        # In the tenant's time zone, with its offset.
        "started_at": call.started_at.astimezone(zone).isoformat() if call.started_at else "",
        "device": call.device.name,
        "agent": call.device.bitrix24_user_id,
        "crm_entity": f"{entity.get('type')} {entity.get('id')} {entity.get('name', '')}".strip()
        if entity
        else "",
        "phone_number": call.phone_number or call.phone_raw,
        "caller": entity.get("name", "") if entity else "",
    }
    return [values[name] if name in values else getattr(call, name) for name, _ in CSV_COLUMNS]


@admin.register(CallEvent)
class CallEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "type", "event_id", "call", "device", "response_status"]
    list_filter = ["type", "response_status"]
    search_fields = ["call__call_id"]
    search_help_text = gettext_lazy("An event_id, or the bridge's call id.")
    list_select_related = ["call", "device"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[CallEvent], search_term: str
    ) -> tuple[QuerySet[CallEvent], bool]:
        try:
            return queryset.filter(event_id=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
