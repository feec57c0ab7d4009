"""The tenant admin of routing by CRM data: rules (ordered, with conditions), the settings, the
test box. Values are picked from the Bitrix24 directory crm syncs where one exists."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from calls.models import Device
from crm.phones import InvalidPhoneNumber, phone_to_e164
from crm.selectors import (
    department_choices,
    directory_entity_fields,
    lead_source_choices,
    lead_status_choices,
    pipeline_choices,
    stage_choices,
    user_choices,
)
from scenarios.document import ROUTING_SETTINGS_DEFAULTS
from scenarios.forms import UserIdsField
from scenarios.models import RoutingCondition, RoutingRule, RoutingSettings
from scenarios.routing.rules import (
    CALLER_TYPES,
    DEAL_FIELDS,
    ENTITY_FIELDS,
    Condition,
    condition_errors,
)
from scenarios.routing.selectors import (
    condition_reference_problem,
    route_explain,
    routing_directory,
    rule_shown,
    target_reference_problems,
)
from scenarios.routing.services import (
    route_preview,
    routing_rule_move,
    routing_rules_check,
    routing_settings_ensure,
)
from tenants.context import tenant_country


def _user_label(user_id: int, names: dict[int, str]) -> str:
    name = names.get(user_id)
    return f"{name} ({user_id})" if name else gettext("user %(id)s") % {"id": user_id}


# The CRM's entity types (as crm names them) as people read them.
ENTITY_TYPE_NAMES = {
    "contact": _("contact"),
    "company": _("company"),
    "lead": _("lead"),
    "deal": _("deal"),
}


def _entity_type_name(kind: str) -> str:
    return str(ENTITY_TYPE_NAMES.get(kind, kind))


def _directory_value_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every value a condition may pick from the synced directory, grouped for the select."""

    return [
        (gettext("Caller types"), [(kind, _entity_type_name(kind)) for kind in CALLER_TYPES]),
        (
            gettext("Users (responsible)"),
            [(str(i), f"{name} ({i})") for i, name in user_choices()],
        ),
        (
            gettext("Deal pipelines"),
            [(str(i), f"{name} ({i})") for i, name in pipeline_choices()],
        ),
        (gettext("Deal stages"), [(i, f"{name} ({i})") for i, name in stage_choices()]),
        (gettext("Lead statuses"), [(i, f"{name} ({i})") for i, name in lead_status_choices()]),
        (gettext("Sources"), [(i, f"{name} ({i})") for i, name in lead_source_choices()]),
    ]


def _field_suggestions() -> list[tuple[str, str]]:
    """Field names for the datalist: the domain ones, then the synced CRM fields (UF_* first)."""

    known = [
        (name, gettext("entity: %(field)s") % {"field": label})
        for name, label in ENTITY_FIELDS.items()
    ]
    known += [
        (name, gettext("deal: %(field)s") % {"field": label})
        for name, label in DEAL_FIELDS.items()
        if name not in ENTITY_FIELDS
    ]
    seen = {name for name, _label in known}
    for row in directory_entity_fields().order_by("-custom", "name", "entity_type"):
        if row.name not in seen:
            seen.add(row.name)
            known.append(
                (row.name, f"{_entity_type_name(row.entity_type)}: {row.title or row.name}")
            )
    return known


class FieldInput(forms.TextInput):
    """A text input with a datalist of the fields conditions can read."""

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        list_id = "routing-fields"
        html = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join("", '<option value="{}">{}</option>', _field_suggestions())
        return format_html('{}<datalist id="{}">{}</datalist>', html, list_id, options)


class RoutingConditionForm(forms.ModelForm):
    picked = forms.MultipleChoiceField(
        required=False,
        label=_("values from Bitrix24"),
        widget=forms.SelectMultiple(attrs={"size": 6}),
        help_text=_("Ctrl/Cmd-click to pick several."),
    )
    typed = forms.CharField(
        required=False,
        label=_("other values"),
        help_text=_("Comma-separated, for fields without a directory (text, UF_* fields)."),
        widget=forms.TextInput(attrs={"size": 24}),
    )

    class Meta:
        model = RoutingCondition
        fields = ["position", "source", "field", "operator"]
        widgets = {"field": FieldInput(attrs={"size": 18})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = _directory_value_choices()
        cast(forms.MultipleChoiceField, self.fields["picked"]).choices = choices
        known = {value for _, group in choices for value, _ in group}
        values = [str(v) for v in (self.instance.values or [])] if self.instance.pk else []
        self.initial["picked"] = [v for v in values if v in known]
        self.initial["typed"] = ", ".join(v for v in values if v not in known)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        typed = [part.strip() for part in (cleaned.get("typed") or "").split(",") if part.strip()]
        values = list(dict.fromkeys([*(cleaned.get("picked") or []), *typed]))
        self.instance.values = values
        source, field = cleaned.get("source"), cleaned.get("field") or ""
        operator = cleaned.get("operator")
        # The model's clean reports malformed settings; what is well formed is checked here
        # against the directory, so what Bitrix24 does not have is refused at once.
        if (
            source
            and operator
            and not condition_errors(source=source, field=field, operator=operator, values=values)
        ):
            problem = condition_reference_problem(
                Condition(source, field, operator, tuple(values)), known=routing_directory()
            )
            if problem:
                self.add_error(None, problem)
        return cleaned


class RoutingConditionInline(admin.TabularInline):
    model = RoutingCondition
    form = RoutingConditionForm
    extra = 1
    ordering = ["position", "pk"]
    fields = ["position", "source", "field", "operator", "picked", "typed", "problem"]
    readonly_fields = ["problem"]

    @admin.display(description=_("Bitrix24"))
    def problem(self, obj: RoutingCondition) -> str:
        if not obj.broken_reason:
            return gettext("OK") if obj.pk else ""
        return format_html('<strong style="color:#ba2121">{}</strong>', obj.broken_reason)


class RoutingRuleForm(forms.ModelForm):
    users = UserIdsField(
        required=False,
        label=_("Users"),
        help_text=_(
            "Bitrix24 users by name or id, comma-separated: the specific user, the round-robin "
            "set or the queue in order (first available first)."
        ),
    )
    department_id = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label=_("department")
    )

    class Meta:
        model = RoutingRule
        fields = ["name", "enabled", "position", "target", "users", "department_id"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        department = cast(forms.TypedChoiceField, self.fields["department_id"])
        department.choices = [("", "---------"), *department_choices()]
        people = ", ".join(f"{name} ({user_id})" for user_id, name in user_choices())
        if people:
            self.fields["users"].help_text = f"{self.fields['users'].help_text} " + gettext(
                "Active users in Bitrix24: %(people)s."
            ) % {"people": people}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        problems = target_reference_problems(
            target=cleaned.get("target") or "",
            users=cleaned.get("users") or [],
            department_id=cleaned.get("department_id"),
            known=routing_directory(),
        )
        if problems:
            raise forms.ValidationError("; ".join(problems))
        return cleaned


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    form = RoutingRuleForm
    inlines = [RoutingConditionInline]
    list_display = [
        "position",
        "name",
        "enabled",
        "target_summary",
        "conditions_summary",
        "status",
        "move",
    ]
    list_display_links = ["name"]
    list_editable = ["enabled"]
    ordering = ["position", "pk"]
    readonly_fields = ["broken_warning"]
    fieldsets = [
        (None, {"fields": ["broken_warning", ("name", "enabled", "position")]}),
        (_("Target"), {"fields": ["target", "users", "department_id"]}),
    ]
    change_list_template = "admin/scenarios/routingrule/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoutingRule]:
        return super().get_queryset(request).prefetch_related("conditions")

    @admin.display(description=_("target"))
    def target_summary(self, obj: RoutingRule) -> str:
        names = self._names()
        if obj.target == RoutingRule.Target.RESPONSIBLE:
            return gettext("responsible user")
        if obj.department_id:
            return gettext("round-robin over department %(department)s") % {
                "department": obj.department_id
            }
        people = ", ".join(_user_label(user, names) for user in obj.users or [])
        kinds: dict[str, str] = {
            RoutingRule.Target.USER: gettext("A specific user"),
            RoutingRule.Target.ROUND_ROBIN: gettext("Round-robin over users or a department"),
            RoutingRule.Target.QUEUE: gettext("A queue of users"),
        }
        return f"{kinds.get(obj.target, obj.target)}: {people}"

    @admin.display(description=_("conditions (all must hold)"))
    def conditions_summary(self, obj: RoutingRule) -> str:
        conditions = obj.conditions.all()
        return "; ".join(c.as_condition().describe_shown() for c in conditions) or gettext("always")

    @admin.display(description=_("Bitrix24"))
    def status(self, obj: RoutingRule) -> str:
        if obj.broken:
            return format_html(
                '<strong style="color:#ba2121">{}</strong>',
                gettext("Broken, skipped: %(reason)s") % {"reason": obj.broken_reason},
            )
        return gettext("OK")

    @admin.display(description=_("order"))
    def move(self, obj: RoutingRule) -> str:
        # Buttons of the changelist form (which carries the CSRF token), posted elsewhere.
        up = reverse("admin:scenarios_routingrule_move", args=[obj.pk, "up"])
        down = reverse("admin:scenarios_routingrule_move", args=[obj.pk, "down"])
        return format_html(
            '<button type="submit" formaction="{}" formmethod="post" title="{}">&uarr;'
            '</button> <button type="submit" formaction="{}" formmethod="post" '
            'title="{}">&darr;</button>',
            up,
            gettext("Move up"),
            down,
            gettext("Move down"),
        )

    @admin.display(description="")
    def broken_warning(self, obj: RoutingRule) -> str:
        if not obj.pk or not obj.broken:
            return gettext("OK: everything this rule names exists in Bitrix24.")
        return format_html(
            '<strong style="color:#ba2121">{}</strong>',
            gettext("This rule is skipped until fixed: %(reason)s") % {"reason": obj.broken_reason},
        )

    def _names(self) -> dict[int, str]:
        if not hasattr(self, "_names_cache"):
            self._names_cache = routing_directory().names
        return self._names_cache

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Checked again on every save, so a fixed rule applies at once (and a new one is judged).
        routing_rules_check(rule_ids=[form.instance.pk])

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        last = RoutingRule.objects.order_by("-position").values_list("position", flat=True)
        return {"position": (last.first() or 0) + 10}

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self.__dict__.pop("_names_cache", None)
        broken = RoutingRule.objects.exclude(broken_reason="")
        if broken.exists():
            messages.warning(
                request,
                gettext(
                    "Some rules refer to what Bitrix24 no longer has and are skipped until "
                    "fixed: %(rules)s"
                )
                % {"rules": " | ".join(f"{rule.name}: {rule.broken_reason}" for rule in broken)},
            )
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        rule = RoutingRule.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        if rule is not None and rule.broken and request.method == "GET":
            messages.warning(
                request,
                gettext("This rule is skipped until fixed: %(reason)s")
                % {"reason": rule.broken_reason},
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<int:rule_id>/move/<str:direction>/",
                self.admin_site.admin_view(require_POST(self.move_view)),
                name="scenarios_routingrule_move",
            ),
            path(
                "test/",
                self.admin_site.admin_view(self.test_view),
                name="scenarios_routingrule_test",
            ),
        ]
        return own + super().get_urls()

    def move_view(self, request: HttpRequest, rule_id: int, direction: str) -> HttpResponse:
        if not self.has_change_permission(request) or direction not in ("up", "down"):
            raise PermissionDenied
        routing_rule_move(rule_id=rule_id, step=-1 if direction == "up" else 1)
        return HttpResponseRedirect(reverse("admin:scenarios_routingrule_changelist"))

    def test_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RouteTestForm(request.GET or None)
        result = None
        if request.GET and form.is_valid():
            device = (
                form.cleaned_data.get("device")
                or Device.objects.filter(revoked_at__isnull=True).order_by("pk").first()
            )
            result = route_preview(
                phone=form.cleaned_data["phone_number"],
                agent_id=device.bitrix24_user_id if device else 0,
            )
            result["rows"] = route_explain(result["route"])
            result["fields"] = _facts_rows(result["facts"])
            result["rule"] = rule_shown(result["route"].get("rule"))
            following = result["route"].get("next") or {}
            result["next_rule"] = rule_shown(following.get("rule"))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Test routing with a number"),
            "opts": self.model._meta,
            "form": form,
            "result": result,
        }
        return TemplateResponse(request, "admin/scenarios/routingrule/test.html", context)


def _facts_rows(facts: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The caller's CRM data routing read: the entity's filled-in fields and each open deal."""
    if not facts:
        return []
    kind = facts.get("entity_type")
    rows = [
        (gettext("caller type"), _entity_type_name(kind) if kind else gettext("(not in the CRM)"))
    ]
    entity = facts.get("entity") or {}
    for name in (*ENTITY_FIELDS, *sorted(k for k in entity if k not in ENTITY_FIELDS)):
        value = entity.get(name)
        if value not in (None, "", [], {}) and (name in ENTITY_FIELDS or name.startswith("UF_")):
            rows.append((f"entity.{name}", str(value)))
    for deal in facts.get("deals") or []:
        summary = ", ".join(
            f"{name}={deal.get(name)}" for name in DEAL_FIELDS if deal.get(name) is not None
        )
        custom = ", ".join(f"{k}={v}" for k, v in sorted(deal.items()) if k.startswith("UF_") and v)
        rows.append(
            (gettext("open deal %(id)s") % {"id": deal.get("id")}, f"{summary} {custom}".strip())
        )
    return rows


class RouteTestForm(forms.Form):
    phone_number = forms.CharField(max_length=32, label=_("Number"))
    device = forms.ModelChoiceField(
        queryset=Device.objects.filter(revoked_at__isnull=True),
        required=False,
        label=_("Device"),
        help_text=_('The phone it rings on (its agent is "Others" by default); empty: the first.'),
    )

    def clean_phone_number(self) -> str:
        try:
            return phone_to_e164(self.cleaned_data["phone_number"], country=tenant_country())
        except InvalidPhoneNumber as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(RoutingSettings)
class RoutingSettingsAdmin(admin.ModelAdmin):
    """The one settings row: the list page opens it."""

    fields = list(ROUTING_SETTINGS_DEFAULTS)  # the settings the configuration document carries

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "others_user_id":
            return forms.TypedChoiceField(
                choices=[("", "---------"), *user_choices()],
                coerce=int,
                empty_value=None,
                required=False,
                label=db_field.verbose_name,
                help_text=db_field.help_text,
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        settings = routing_settings_ensure()
        return HttpResponseRedirect(
            reverse("admin:scenarios_routingsettings_change", args=[settings.pk])
        )
