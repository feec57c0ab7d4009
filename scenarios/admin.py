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
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from crm.selectors import (
    lead_source_choices,
    lead_status_choices,
    pipeline_choices,
    stage_choices,
)
from scenarios.choices import CREATION_TYPES
from scenarios.document import config_export, config_import
from scenarios.forms import ConditionsField, DirectoryChoiceField, FieldValuesField, UserIdsField
from scenarios.models import (
    CONFIG_FIELDS,
    ActionRun,
    Holiday,
    OfficeHours,
    RoundRobinCursor,
    Scenario,
    ScenarioAction,
    ScenarioSettings,
)
from scenarios.outbox import run_retry
from scenarios.planning import label_shown

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
        label=_("Users"),
        help_text=_(
            "Bitrix24 users by name or id, comma-separated: the fixed user, the round-robin set "
            "(empty = every agent carrying a bridge device) or extra notification recipients."
        ),
    )
    recipients = forms.MultipleChoiceField(
        choices=Action.Recipient.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label=_("Recipients"),
        help_text=_("Who gets the notification (besides the users listed above)."),
    )
    conditions = ConditionsField(
        required=False,
        label=_("Conditions"),
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_(
            'Run only when all hold, as routing rules\' conditions, e.g. [{"source": '
            '"entity", "field": "status", "operator": "equals", "values": ["NEW"]}]; sources '
            "entity_type, entity, deal; operators equals, not_equals, contains, not_contains, "
            "empty, not_empty. Empty: always."
        ),
    )
    secret = forms.CharField(
        required=False,
        label=_("New webhook secret"),
        widget=forms.PasswordInput(render_value=False),
        help_text=_(
            "Signs each request (HMAC-SHA256 of the body, header X-SIMtrix-Signature). Leave "
            "empty to keep the stored one; it is never shown after saving."
        ),
    )

    class Meta:
        model = ScenarioAction
        fields = ["position", *CONFIG_FIELDS]
        widgets = {
            "text_template": forms.Textarea(attrs={"rows": 2, "cols": 60}),
            "url": forms.TextInput(attrs={"size": 60}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Names from the synced directory in place of Bitrix24's ids.
        pickers: list[tuple[str, list[tuple[Any, str]], type]] = [
            ("lead_status_id", list(lead_status_choices()), str),
            ("lead_source_id", list(lead_source_choices()), str),
            ("pipeline_id", list(pipeline_choices()), int),
            ("stage_id", list(stage_choices()), str),
        ]
        # Declared here, not on the class: a form's `fields` is its mapping of fields.
        self.fields["fields"] = FieldValuesField(
            required=False,
            label=_("Fields"),
            help_text=_(
                "Update fields: one per line, NAME = value, names as Bitrix24 has them "
                "(UF_CRM_LAST_CALL = {outcome} {time}); checked against the CRM's fields."
            ),
        )
        # A lead status or a stage: which one the target says (both lists, named).
        statuses = [
            (value, gettext("Lead status: %(name)s") % {"name": name})
            for value, name in lead_status_choices()
        ]
        pickers.append(("status_id", [*statuses, *stage_choices()], str))
        for name, choices, coerce in pickers:
            model_field = self.fields[name]
            self.fields[name] = DirectoryChoiceField(
                choices=choices,
                current=self.initial.get(name),
                coerce=coerce,
                label=model_field.label,
                help_text=model_field.help_text,
            )

    def clean_secret(self) -> str:
        # Empty keeps what is stored (the form never shows it).
        return self.cleaned_data.get("secret") or self.instance.secret


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
            raise forms.ValidationError(
                gettext("At most one active lead or deal creation per scenario.")
            )


def _template_help() -> str:
    """The "What" fieldset's note: the placeholders templates may use, in the reader's language."""
    variables = ", ".join(f"{{{name}}} ({what})" for name, what in TEMPLATE_VARIABLES.items())
    return gettext("Templates may use %(variables)s") % {"variables": variables}


class ScenarioActionInline(admin.StackedInline):
    model = ScenarioAction
    form = ScenarioActionForm
    formset = ScenarioActionFormSet
    extra = 0
    ordering = ["position", "pk"]
    readonly_fields = ["reference_problems", "secret_state"]
    fieldsets = [
        (None, {"fields": [("position", "action_type", "is_active"), "reference_problems"]}),
        (
            _("When"),
            {
                "fields": [
                    ("timing", "delay_minutes", "delay_in_working_time"),
                    ("date_field", "date_of"),
                    "hours",
                    "conditions",
                ]
            },
        ),
        (_("Who"), {"fields": ["responsible", "users", "recipients", "card_for"]}),
        (
            _("What"),
            {
                "fields": [
                    "title_template",
                    "text_template",
                    ("deadline_minutes", "deadline_in_working_time"),
                    "skip_if_reached",
                    ("automation_code", "automation_target"),
                    ("lead_status_id", "lead_source_id"),
                    ("pipeline_id", "stage_id"),
                    ("target", "status_id"),
                    "fields",
                    "url",
                    ("secret", "secret_state"),
                ],
                "description": lazy(_template_help, str)(),
            },
        ),
    ]

    @admin.display(description=_("Webhook secret"))
    def secret_state(self, obj: ScenarioAction) -> str:
        return gettext("stored (hidden)") if obj.pk and obj.secret else gettext("not set")

    @admin.display(description=_("Bitrix24 references"))
    def reference_problems(self, obj: ScenarioAction) -> str:
        problems = self._problems().get(obj.pk, []) if obj.pk else []
        if not problems:
            return gettext("OK")
        return format_html(
            '<strong style="color:#ba2121">{}</strong>',
            gettext("Skipped when it runs: %(problems)s") % {"problems": "; ".join(problems)},
        )

    def _problems(self) -> dict[int, list[str]]:
        # One directory read per page, not per action.
        if not hasattr(self, "_problem_cache"):
            self._problem_cache = actions_with_problems()
        return self._problem_cache

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        self.__dict__.pop("_problem_cache", None)
        return super().get_formset(request, obj, **kwargs)


class ScenarioForm(forms.ModelForm):
    """A scenario is for the whole tenant (one per trigger) or for some devices (each device in
    at most one scenario per trigger)."""

    class Meta:
        model = Scenario
        fields = ["trigger", "name", "devices", "is_active", "description"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean returns cleaned_data
        trigger, devices = data.get("trigger"), list(data.get("devices") or [])
        others = Scenario.objects.filter(trigger=trigger).exclude(pk=self.instance.pk)
        if trigger and not devices and others.filter(devices__isnull=True).exists():
            self.add_error(
                "devices",
                gettext(
                    "There is a scenario for every phone for this trigger already: limit this "
                    "one to some devices, or change that one."
                ),
            )
        taken = others.filter(devices__in=devices).values_list("devices__name", "name")
        for device, scenario in taken:
            self.add_error(
                "devices",
                gettext("%(device)s has the scenario %(scenario)s for this trigger already.")
                % {"device": device, "scenario": scenario},
            )
        return data


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    form = ScenarioForm
    list_display = [
        "name",
        "trigger",
        "lines",
        "is_active",
        "action_count",
        "problems",
        "updated_at",
    ]
    list_filter = ["is_active"]
    filter_horizontal = ["devices"]
    inlines = [ScenarioActionInline]
    actions = ["export_configuration"]
    change_list_template = "admin/scenarios/scenario/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Scenario]:
        queryset = super().get_queryset(request).prefetch_related("devices")
        return queryset.annotate(action_total=Count("actions", distinct=True))

    @admin.display(description=_("actions"), ordering="action_total")
    def action_count(self, obj: WithAnnotations[Scenario, _ActionTotal]) -> int:
        return obj.action_total

    @admin.display(description=_("phones"))
    def lines(self, obj: Scenario) -> str:
        names = [device.name for device in obj.devices.all()]
        return ", ".join(names) if names else gettext("every phone")

    @admin.display(description=_("Bitrix24 references"))
    def problems(self, obj: Scenario) -> str:
        flagged = self._flagged()
        count = sum(1 for action in obj.actions.all() if action.pk in flagged)
        if not count:
            return gettext("OK")
        return format_html(
            '<strong style="color:#ba2121">{}</strong>',
            ngettext("%(count)s action flagged", "%(count)s actions flagged", count)
            % {"count": count},
        )

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
                gettext(
                    "Some actions refer to what Bitrix24 no longer has and will be skipped: "
                    "%(actions)s"
                )
                % {"actions": " | ".join(lines)},
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

    @admin.action(description=_("Export the whole configuration (JSON)"))
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
                broken = counts.get("routing_rules_broken")
                if broken:
                    messages.warning(
                        request,
                        ngettext(
                            "%(count)s imported routing rule names what Bitrix24 does not have "
                            "and is skipped until fixed (see Routing rules).",
                            "%(count)s imported routing rules name what Bitrix24 does not have "
                            "and are skipped until fixed (see Routing rules).",
                            broken,
                        )
                        % {"count": broken},
                    )
                return HttpResponseRedirect(reverse("admin:scenarios_scenario_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Import the scenario configuration"),
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
            "title": gettext("Simulate a call"),
            "opts": self.model._meta,
            "form": form,
            "result": result,
        }
        response = TemplateResponse(request, "admin/scenarios/scenario/simulate.html", context)
        # Due times read in the tenant's wall-clock time, as the form took them.
        with timezone.override(ZoneInfo(tenant_timezone())):
            return response.render()


def _import_summary(counts: dict[str, int]) -> str:
    rules, settings = "routing_rules" in counts, "routing_settings" in counts
    if rules and settings:
        summary = gettext(
            "Configuration imported: %(scenarios)s scenarios, %(actions)s actions, "
            "%(office_hours)s office-hour periods, %(holidays)s holidays, %(routing_rules)s "
            "routing rules, the routing settings."
        )
    elif rules:
        summary = gettext(
            "Configuration imported: %(scenarios)s scenarios, %(actions)s actions, "
            "%(office_hours)s office-hour periods, %(holidays)s holidays, %(routing_rules)s "
            "routing rules."
        )
    elif settings:
        summary = gettext(
            "Configuration imported: %(scenarios)s scenarios, %(actions)s actions, "
            "%(office_hours)s office-hour periods, %(holidays)s holidays, the routing settings."
        )
    else:
        summary = gettext(
            "Configuration imported: %(scenarios)s scenarios, %(actions)s actions, "
            "%(office_hours)s office-hour periods, %(holidays)s holidays; routing left as it "
            "was (the file has none)."
        )
    return summary % counts


class ConfigImportForm(forms.Form):
    file = forms.FileField(required=False, label=_("File"), help_text=_("A file made by Export."))
    text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100}),
        label=_("or paste"),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # Form.clean returns cleaned_data
        upload = cleaned.get("file")
        raw = upload.read() if upload else (cleaned.get("text") or "").encode()
        if not raw.strip():
            raise forms.ValidationError(gettext("Choose a file or paste the configuration."))
        try:
            cleaned["data"] = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise forms.ValidationError(
                gettext("Not valid JSON: %(error)s") % {"error": exc}
            ) from exc
        return cleaned


@admin.register(ScenarioSettings)
class ScenarioSettingsAdmin(admin.ModelAdmin):
    """The one settings row: the list page opens it."""

    fields = ["webhooks_allow_http"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        settings, _ = ScenarioSettings.objects.get_or_create(singleton=1)
        return HttpResponseRedirect(
            reverse("admin:scenarios_scenariosettings_change", args=[settings.pk])
        )


@admin.register(OfficeHours)
class OfficeHoursAdmin(admin.ModelAdmin):
    list_display = ["__str__", "weekday", "opens_at", "closes_at"]
    list_editable = ["weekday", "opens_at", "closes_at"]
    list_display_links = ["__str__"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        subtitle = gettext("Times are in %(zone)s") % {"zone": tenant_timezone()}
        extra_context = {**(extra_context or {}), "subtitle": subtitle}
        return super().changelist_view(request, extra_context)


@admin.register(Holiday)
class HolidayAdmin(admin.ModelAdmin):
    list_display = ["date", "name", "every_year"]
    list_filter = ["every_year"]
    date_hierarchy = "date"


class CallFilter(admin.SimpleListFilter):
    """Runs of one call (?call=ID); the call page links here."""

    title = _("call")
    parameter_name = "call"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return (
            [(value, gettext("Call %(id)s") % {"id": value})] if value and value.isdigit() else []
        )

    def queryset(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> QuerySet[ActionRun]:
        value = self.value()
        return queryset.filter(call_id=int(value)) if value and value.isdigit() else queryset


class LateFilter(admin.SimpleListFilter):
    """Runs due for more than a minute and not started (?late=yes); the admin home links here."""

    title = _("lateness")
    parameter_name = "late"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", gettext("Late (due over a minute ago, not started)"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> QuerySet[ActionRun]:
        return runs_late(queryset) if self.value() == "yes" else queryset


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    """The outbox, read-only except for retrying failed runs."""

    list_display = [
        "pk",
        "call_link",
        "action_type",
        "label_text",
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

    @admin.display(description=_("call"), ordering="call")
    def call_link(self, obj: ActionRun) -> str:
        try:
            url = reverse("admin:calls_call_change", args=[obj.call_id])
        except Exception:  # the call page may not exist (calls admin not registered)
            return str(obj.call)
        return format_html('<a href="{}">{}</a>', url, obj.call)

    @admin.display(description=_("label"), ordering="label")
    def label_text(self, obj: ActionRun) -> str:
        return label_shown(obj.label, action_type=obj.action_type, params=obj.params or {})

    @admin.display(description=_("last error / reason"))
    def error(self, obj: ActionRun) -> str:
        return obj.last_error[:120]

    @admin.display(description=_("status"), ordering="status")
    def status_shown(self, obj: ActionRun) -> str:
        late = obj.late_by
        if late is None:
            return obj.get_status_display()
        return format_html(
            '{} <strong class="errornote" style="padding:0 4px">{}</strong>',
            obj.get_status_display(),
            gettext("late by %(duration)s") % {"duration": duration_text(late)},
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        attention = runs_attention()
        if attention["late"]:
            messages.warning(
                request,
                gettext(
                    "%(count)s run(s) are late: due over a minute ago and not started (the oldest "
                    "by %(oldest)s). Background work is not being picked up: check that the "
                    "worker and beat are running."
                )
                % {
                    "count": attention["late"],
                    "oldest": duration_text(attention["oldest_late_by"]),
                },
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description=_("Retry the selected failed runs"), permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[ActionRun]) -> None:
        failed = list(queryset.filter(status=ActionRun.Status.FAILED).values_list("pk", flat=True))
        retried = run_retry(run_ids=failed)
        ignored = queryset.count() - retried
        messages.success(request, gettext("%(count)s run(s) scheduled again.") % {"count": retried})
        if ignored:
            messages.info(
                request,
                ngettext(
                    "%(count)s selected run had not failed and was left alone.",
                    "%(count)s selected runs had not failed and were left alone.",
                    ignored,
                )
                % {"count": ignored},
            )


@admin.register(RoundRobinCursor)
class RoundRobinCursorAdmin(admin.ModelAdmin):
    list_display = ["key", "last_user_id", "assignments", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
