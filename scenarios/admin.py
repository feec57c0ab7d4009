"""The tenant admin of the scenario engine: scenarios, office hours, runs, import, simulate."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypedDict
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from scenarios.choices import CREATION_TYPES
from scenarios.document import config_export, config_import
from scenarios.forms import UserIdsField
from scenarios.models import (
    CONFIG_FIELDS,
    ActionRun,
    Holiday,
    OfficeHours,
    RoundRobinCursor,
    Scenario,
    ScenarioAction,
)
from scenarios.outbox import run_retry

# Routing's rules, settings and test box live in their own admin module; admin.autodiscover
# imports only this one, so importing it here registers them.
from scenarios.routing import admin as routing_admin  # noqa: F401
from scenarios.selectors import actions_with_problems, runs_attention, runs_late
from scenarios.simulate import SimulateForm, simulate
from scenarios.templatetags.outbox_tags import duration_text
from scenarios.validation import TEMPLATE_VARIABLES, ConfigError
from tenants.connection import tenant_connection
from tenants.context import tenant_timezone

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

Action = ScenarioAction


class _ActionTotal(TypedDict):
    action_total: int


class ScenarioActionForm(forms.ModelForm):
    users = UserIdsField(
        required=False,
        help_text="Bitrix24 users by name or id, comma-separated: the fixed user, the "
        "round-robin set "
        "(empty = every agent carrying a bridge device) or extra notification recipients.",
    )
    recipients = forms.MultipleChoiceField(
        choices=Action.Recipient.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Who gets the notification (besides the users listed above).",
    )

    class Meta:
        model = ScenarioAction
        fields = ["position", *CONFIG_FIELDS]
        widgets = {"text_template": forms.Textarea(attrs={"rows": 2, "cols": 60})}


class ScenarioActionFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        creations = [
            form
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("is_active")
            and form.cleaned_data.get("action_type") in CREATION_TYPES
        ]
        if len(creations) > 1:
            raise forms.ValidationError("At most one active lead or deal creation per scenario.")


class ScenarioActionInline(admin.StackedInline):
    model = ScenarioAction
    form = ScenarioActionForm
    formset = ScenarioActionFormSet
    extra = 0
    ordering = ["position", "pk"]
    readonly_fields = ["reference_problems"]
    fieldsets = [
        (None, {"fields": [("position", "action_type", "is_active"), "reference_problems"]}),
        ("When", {"fields": [("timing", "delay_minutes", "delay_in_working_time"), "hours"]}),
        ("Who", {"fields": ["responsible", "users", "recipients", "card_for"]}),
        (
            "What",
            {
                "fields": [
                    "title_template",
                    "text_template",
                    ("deadline_minutes", "deadline_in_working_time"),
                    "skip_if_reached",
                    ("automation_code", "automation_target"),
                    ("lead_status_id", "lead_source_id"),
                    ("pipeline_id", "stage_id"),
                ],
                "description": "Templates may use "
                + ", ".join(f"{{{name}}} ({what})" for name, what in TEMPLATE_VARIABLES.items()),
            },
        ),
    ]

    @admin.display(description="Bitrix24 references")
    def reference_problems(self, obj: ScenarioAction) -> str:
        problems = self._problems().get(obj.pk, []) if obj.pk else []
        if not problems:
            return "OK"
        return format_html(
            '<strong style="color:#ba2121">Skipped when it runs: {}</strong>', "; ".join(problems)
        )

    def _problems(self) -> dict[int, list[str]]:
        # One directory read per page, not per action.
        if not hasattr(self, "_problem_cache"):
            self._problem_cache = actions_with_problems()
        return self._problem_cache

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        self.__dict__.pop("_problem_cache", None)
        return super().get_formset(request, obj, **kwargs)


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    list_display = ["name", "trigger", "is_active", "action_count", "problems", "updated_at"]
    list_filter = ["is_active"]
    inlines = [ScenarioActionInline]
    actions = ["export_configuration"]
    change_list_template = "admin/scenarios/scenario/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Scenario]:
        return super().get_queryset(request).annotate(action_total=Count("actions"))

    @admin.display(description="actions", ordering="action_total")
    def action_count(self, obj: WithAnnotations[Scenario, _ActionTotal]) -> int:
        return obj.action_total

    @admin.display(description="Bitrix24 references")
    def problems(self, obj: Scenario) -> str:
        flagged = self._flagged()
        count = sum(1 for action in obj.actions.all() if action.pk in flagged)
        if not count:
            return "OK"
        return format_html('<strong style="color:#ba2121">{} action(s) flagged</strong>', count)

    def _flagged(self) -> dict[int, list[str]]:
        if not hasattr(self, "_flagged_cache"):
            self._flagged_cache = actions_with_problems()
        return self._flagged_cache

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self.__dict__.pop("_flagged_cache", None)
        flagged = self._flagged()
        if flagged:
            lines = [
                f"{action}: {'; '.join(problems)}"
                for action in ScenarioAction.objects.filter(pk__in=flagged).select_related(
                    "scenario"
                )
                for problems in [flagged[action.pk]]
            ]
            messages.warning(
                request,
                "Some actions refer to what Bitrix24 no longer has and will be skipped: "
                + " | ".join(lines),
            )
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "simulate/",
                self.admin_site.admin_view(self.simulate_view),
                name="scenarios_scenario_simulate",
            ),
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="scenarios_scenario_import",
            ),
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="scenarios_scenario_export",
            ),
        ]
        return own + super().get_urls()

    @admin.action(description="Export the whole configuration (JSON)")
    def export_configuration(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> Any:
        return self.export_view(request)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        body = json.dumps(config_export(), indent=2, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/json")
        schema = tenant_connection.schema_name
        name = f"simtrix-configuration-{schema}-{timezone.now():%Y%m%d}.json"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_change_permission(request) and self.has_delete_permission(request)):
            raise PermissionDenied
        form = ConfigImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            try:
                counts = config_import(data=form.cleaned_data["data"])
            except ConfigError as exc:
                errors = exc.errors
            else:
                messages.success(request, _import_summary(counts))
                if counts.get("routing_rules_broken"):
                    messages.warning(
                        request,
                        "{routing_rules_broken} imported routing rule(s) name what Bitrix24 "
                        "does not have and are skipped until fixed (see Routing rules).".format(
                            **counts
                        ),
                    )
                return HttpResponseRedirect(reverse("admin:scenarios_scenario_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import the scenario configuration",
            "opts": self.model._meta,
            "form": form,
            "errors": errors,
        }
        return TemplateResponse(request, "admin/scenarios/scenario/import.html", context)

    def simulate_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = SimulateForm(request.POST or None)
        result = None
        if request.method == "POST" and form.is_valid():
            result = simulate(**form.simulation_kwargs())
        context = {
            **self.admin_site.each_context(request),
            "title": "Simulate a call",
            "opts": self.model._meta,
            "form": form,
            "result": result,
        }
        response = TemplateResponse(request, "admin/scenarios/scenario/simulate.html", context)
        # Due times read in the tenant's wall-clock time, as the form took them.
        with timezone.override(ZoneInfo(tenant_timezone())):
            return response.render()


def _import_summary(counts: dict[str, int]) -> str:
    summary = (
        "Configuration imported: {scenarios} scenarios, {actions} actions, "
        "{office_hours} office-hour periods, {holidays} holidays".format(**counts)
    )
    if "routing_rules" in counts:
        summary += ", {routing_rules} routing rules".format(**counts)
    if "routing_settings" in counts:
        summary += ", the routing settings"
    if "routing_rules" not in counts and "routing_settings" not in counts:
        summary += "; routing left as it was (the file has none)"
    return summary + "."


class ConfigImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="A file made by Export.")
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 12, "cols": 100}), label="or paste"
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # Form.clean returns cleaned_data
        upload = cleaned.get("file")
        raw = upload.read() if upload else (cleaned.get("text") or "").encode()
        if not raw.strip():
            raise forms.ValidationError("Choose a file or paste the configuration.")
        try:
            cleaned["data"] = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        return cleaned


@admin.register(OfficeHours)
class OfficeHoursAdmin(admin.ModelAdmin):
    list_display = ["__str__", "weekday", "opens_at", "closes_at"]
    list_editable = ["weekday", "opens_at", "closes_at"]
    list_display_links = ["__str__"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "subtitle": f"Times are in {tenant_timezone()}"}
        return super().changelist_view(request, extra_context)


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    list_display = ["date", "name", "every_year"]
    list_filter = ["every_year"]
    date_hierarchy = "date"


class CallFilter(admin.SimpleListFilter):
    """Runs of one call (?call=ID); the call page links here."""

    title = "call"
    parameter_name = "call"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"Call {value}")] if value and value.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> QuerySet[ActionRun]:
        value = self.value()
        return queryset.filter(call_id=int(value)) if value and value.isdigit() else queryset


class LateFilter(admin.SimpleListFilter):
    """Runs due for more than a minute and not started (?late=yes); the admin home links here."""

    title = "lateness"
    parameter_name = "late"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Late (due over a minute ago, not started)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> QuerySet[ActionRun]:
        return runs_late(queryset) if self.value() == "yes" else queryset


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    """The outbox, read-only except for retrying failed runs."""

    list_display = [
        "pk",
        "call_link",
        "action_type",
        "label",
        "status_shown",
        "due_at",
        "done_at",
        "attempts",
        "error",
    ]
    list_filter = [CallFilter, LateFilter, "status", "action_type"]
    search_fields = ["call__call_id", "call__phone_number", "label", "dedupe_key"]
    list_select_related = ["call"]
    date_hierarchy = "created_at"
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("scenarios.change_actionrun")

    @admin.display(description="call", ordering="call")
    def call_link(self, obj: ActionRun) -> str:
        try:
            url = reverse("admin:calls_call_change", args=[obj.call_id])
        except Exception:  # the call page may not exist (calls admin not registered)
            return str(obj.call)
        return format_html('<a href="{}">{}</a>', url, obj.call)

    @admin.display(description="last error / reason")
    def error(self, obj: ActionRun) -> str:
        return obj.last_error[:120]

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: ActionRun) -> str:
        late = obj.late_by
        if late is None:
            return obj.get_status_display()
        return format_html(
            '{} <strong class="errornote" style="padding:0 4px">late by {}</strong>',
            obj.get_status_display(),
            duration_text(late),
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        attention = runs_attention()
        if attention["late"]:
            messages.warning(
                request,
                f"{attention['late']} run(s) are late: due over a minute ago and not started "
                f"(the oldest by {duration_text(attention['oldest_late_by'])}). Background work is "
                "not being picked up: check that the worker and beat are running.",
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Retry the selected failed runs", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> None:
        failed = list(queryset.filter(status=ActionRun.Status.FAILED).values_list("pk", flat=True))
        retried = run_retry(run_ids=failed)
        ignored = queryset.count() - retried
        messages.success(request, f"{retried} run(s) scheduled again.")
        if ignored:
            messages.info(request, f"{ignored} selected run(s) had not failed and were left alone.")


@admin.register(RoundRobinCursor)
class RoundRobinCursorAdmin(admin.ModelAdmin):
    list_display = ["key", "last_user_id", "assignments", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
