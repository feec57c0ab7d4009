"""A tenant's configuration as one JSON document: its format, its validation, the defaults,
and its export and import (scenarios, office hours, holidays and routing, in one transaction).

The admin forms, the import command and the installer all validate through `config_errors` (and
validation.py's per-row rules), so a rule is written once and every entry point gives the same
message. The format is documented in docs/configuration.md.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, cast

from django.db import models, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop

from calls.models import Device
from scenarios.catalog import CrmCatalog, action_catalog_errors, crm_catalog
from scenarios.choices import CREATION_TYPES, ActionType, Trigger
from scenarios.models import (
    CONFIG_FIELDS,
    Holiday,
    OfficeHours,
    RoundRobinCursor,
    RoutingCondition,
    RoutingRule,
    RoutingSettings,
    Scenario,
    ScenarioAction,
    ScenarioSettings,
    scenario_settings_get,
)
from scenarios.routing.rules import OPERATORS, SOURCES, condition_errors, target_errors
from scenarios.routing.selectors import routing_settings_get
from scenarios.routing.services import routing_rules_check
from scenarios.validation import (
    WEEKDAYS,
    ConfigError,
    _is_whole,
    action_errors,
    hours_errors,
    must_be_one_of,
)
from tenants.context import tenant_language

FORMAT_NAME = "simtrix-configuration"
FORMAT_VERSION = 1


# --- The JSON format ------------------------------------------------------------------------


def _field_default(model: type[models.Model], name: str) -> Any:
    field = cast("models.Field[Any, Any]", model._meta.get_field(name))  # a concrete field
    if field.has_default():
        return field.get_default()
    return None if field.null else ""


# What an action field holds when an imported action leaves it out.
ACTION_DEFAULTS: dict[str, Any] = {
    name: _field_default(ScenarioAction, name) for name in CONFIG_FIELDS[1:]
}
# The routing settings in export order, with what one left out of `routing.settings` holds.
ROUTING_SETTINGS_DEFAULTS: dict[str, Any] = {
    name: _field_default(RoutingSettings, name)
    for name in (
        "responsible_first",
        "use_timeman",
        "others_target",
        "others_user_id",
        "missed_to",
        "transfer_updates_responsible",
    )
}
RULE_KEYS = ("name", "enabled", "target", "users", "department_id", "conditions")
CONDITION_KEYS = ("source", "field", "operator", "values")
MAX_ID = 2**31 - 1  # a PositiveIntegerField column (department, "Others" user)


# Settings a document never carries in clear: an exported webhook leaves its secret out, and
# an imported one without a secret keeps the one stored for its URL (see config_import).
NOT_EXPORTED = frozenset({"secret"})
SETTINGS_KEYS = ("webhooks_allow_http",)


def action_to_data(config: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the defaults, so an export reads like the admin form."""
    data = {"action_type": config["action_type"]}
    for name in CONFIG_FIELDS:
        if name in NOT_EXPORTED:
            continue
        if name != "action_type" and config.get(name) != ACTION_DEFAULTS.get(name):
            data[name] = config[name]
    return data


@dataclass(frozen=True)
class DocumentContext:
    """What an import is checked against besides the document itself: crm's directory, the
    tenant's devices (a line's number -> its active devices), the secrets stored for webhook
    URLs, and whether webhooks may use http."""

    catalog: CrmCatalog = field(default_factory=CrmCatalog)
    devices: dict[str, list[int]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    allow_http: bool = False


def document_context() -> DocumentContext:
    devices: dict[str, list[int]] = {}
    for pk, number in Device.objects.filter(revoked_at__isnull=True).values_list(
        "pk", "phone_number"
    ):
        devices.setdefault(number, []).append(pk)
    secrets = {
        action.url: action.secret
        for action in ScenarioAction.objects.filter(action_type=ActionType.WEBHOOK).exclude(url="")
        if action.secret
    }
    return DocumentContext(
        catalog=crm_catalog(),
        devices=devices,
        secrets=secrets,
        allow_http=scenario_settings_get().webhooks_allow_http,
    )


def _with_secret(config: dict[str, Any], context: DocumentContext | None) -> dict[str, Any]:
    """A webhook imported without its secret takes the one stored for its URL."""
    if (
        config.get("action_type") == ActionType.WEBHOOK
        and not config.get("secret")
        and context is not None
        and config.get("url") in context.secrets
    ):
        return {**config, "secret": context.secrets[config["url"]]}
    return config


def _time_parse(value: Any) -> time | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}:\d{2}", value):
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


def _unknown_keys(where: str, unknown: set[str]) -> str:
    return f"{where}: " + gettext("unknown keys %(keys)s") % {"keys": sorted(unknown)}


def _not_bool(where: str) -> str:
    return f"{where}: " + gettext("must be true or false")


def _not_object(where: str) -> str:
    return f"{where}: " + gettext("must be an object")


def _not_list(where: str) -> str:
    return f"{where}: " + gettext("must be a list")


def _bad_name(where: str) -> str:
    return f"{where}: " + gettext("must be non-empty text of at most 100 characters")


def config_errors(data: Any, context: DocumentContext | None = None) -> list[str]:
    """Every problem of an imported configuration, each as 'where: what' (`where` is the JSON
    path, as written in the file; `what` in the active language).

    With a `context` (config_import reads one) also what the document names in Bitrix24's
    directory and among the tenant's devices; without one the check reads no row."""
    if not isinstance(data, dict):
        return [gettext("the configuration must be a JSON object")]
    errors = []
    if data.get("format") != FORMAT_NAME:
        errors.append("format: " + gettext("must be %(value)s") % {"value": repr(FORMAT_NAME)})
    if data.get("version") != FORMAT_VERSION:
        errors.append("version: " + gettext("must be %(value)s") % {"value": FORMAT_VERSION})
    unknown = set(data) - {
        "format",
        "version",
        "exported_at",
        "office_hours",
        "scenarios",
        "routing",
        "settings",
    }
    if unknown:
        errors.append(gettext("unknown keys: %(keys)s") % {"keys": sorted(unknown)})
    errors += _office_hours_errors(data.get("office_hours", {}))
    settings = data.get("settings", {})
    errors += _settings_errors(settings)
    allow_http = (
        settings.get("webhooks_allow_http")
        if isinstance(settings, dict) and isinstance(settings.get("webhooks_allow_http"), bool)
        else context is not None and context.allow_http
    )
    check = _Check(context=context, allow_http=bool(allow_http))
    # An export made before routing was part of the document has no "routing": it is optional.
    routing_errors = _routing_errors(data["routing"]) if "routing" in data else []
    scenarios = data.get("scenarios", [])
    if not isinstance(scenarios, list):
        return [*errors, _not_list("scenarios"), *routing_errors]
    for index, scenario in enumerate(scenarios):
        errors += _scenario_errors(scenario, f"scenarios[{index}]", check)
    return errors + routing_errors


@dataclass
class _Check:
    """What the scenarios' checks share: the context, and the triggers and devices seen."""

    context: DocumentContext | None
    allow_http: bool
    tenant_wide: set[str] = field(default_factory=set)
    # (trigger, device id) -> where it was named first
    per_device: dict[tuple[str, int], str] = field(default_factory=dict)


def _settings_errors(settings: Any) -> list[str]:
    if not isinstance(settings, dict):
        return [_not_object("settings")]
    errors = []
    unknown = set(settings) - set(SETTINGS_KEYS)
    if unknown:
        errors.append(_unknown_keys("settings", unknown))
    if not isinstance(settings.get("webhooks_allow_http", False), bool):
        errors.append(_not_bool("settings.webhooks_allow_http"))
    return errors


def _office_hours_errors(hours: Any) -> list[str]:
    if not isinstance(hours, dict):
        return ["office_hours: " + gettext("must be an object with 'weekly' and 'holidays'")]
    errors = []
    unknown = set(hours) - {"weekly", "holidays"}
    if unknown:
        errors.append(_unknown_keys("office_hours", unknown))
    weekly = hours.get("weekly", [])
    periods = []
    if not isinstance(weekly, list):
        errors.append(_not_list("office_hours.weekly"))
        weekly = []
    for index, period in enumerate(weekly):
        where = f"office_hours.weekly[{index}]"
        if not isinstance(period, dict) or set(period) != {"weekday", "opens_at", "closes_at"}:
            errors.append(
                f"{where}: " + gettext("must have exactly weekday, opens_at and closes_at")
            )
            continue
        if period["weekday"] not in WEEKDAYS:
            errors.append(f"{where}.weekday: " + must_be_one_of(list(WEEKDAYS)))
            continue
        opens, closes = _time_parse(period["opens_at"]), _time_parse(period["closes_at"])
        if opens is None or closes is None:
            errors.append(
                f"{where}: " + gettext("times must be HH:MM (24 h), 00:00 closing = midnight")
            )
            continue
        periods.append((WEEKDAYS.index(period["weekday"]), opens, closes))
    errors += [f"office_hours.weekly: {problem}" for problem in hours_errors(periods)]
    return errors + _holidays_errors(hours.get("holidays", []))


def _holidays_errors(holidays: Any) -> list[str]:
    if not isinstance(holidays, list):
        return [_not_list("office_hours.holidays")]
    errors = []
    dates = set()
    for index, holiday in enumerate(holidays):
        where = f"office_hours.holidays[{index}]"
        if not isinstance(holiday, dict) or not {"date"} <= set(holiday) <= {
            "date",
            "name",
            "every_year",
        }:
            errors.append(f"{where}: " + gettext("must have date and optionally name, every_year"))
            continue
        try:
            day = date.fromisoformat(holiday["date"])
        except (TypeError, ValueError):
            errors.append(f"{where}.date: " + gettext("must be YYYY-MM-DD"))
            continue
        if day in dates:
            errors.append(f"{where}.date: " + gettext("%(date)s is listed twice") % {"date": day})
        dates.add(day)
        if not isinstance(holiday.get("name", ""), str) or len(holiday.get("name", "")) > 100:
            errors.append(f"{where}.name: " + gettext("must be text of at most 100 characters"))
        if not isinstance(holiday.get("every_year", False), bool):
            errors.append(_not_bool(f"{where}.every_year"))
    return errors


def _scenario_errors(scenario: Any, where: str, check: _Check) -> list[str]:
    if not isinstance(scenario, dict):
        return [_not_object(where)]
    errors = []
    unknown = set(scenario) - {"trigger", "name", "is_active", "description", "actions", "devices"}
    if unknown:
        errors.append(_unknown_keys(where, unknown))
    trigger = scenario.get("trigger")
    devices = scenario.get("devices", [])
    if trigger not in Trigger.values:
        errors.append(f"{where}.trigger: " + must_be_one_of(Trigger.values))
    elif not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        errors.append(f"{where}.devices: " + gettext("must be a list of the lines' numbers"))
    elif devices:
        errors += _devices_errors(devices, where, trigger, check)
    elif trigger in check.tenant_wide:
        errors.append(
            f"{where}.trigger: "
            + gettext("%(trigger)s appears twice (one scenario per outcome)")
            % {"trigger": repr(trigger)}
        )
    else:
        check.tenant_wide.add(trigger)
    name = scenario.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors.append(_bad_name(f"{where}.name"))
    if not isinstance(scenario.get("is_active", True), bool):
        errors.append(_not_bool(f"{where}.is_active"))
    if not isinstance(scenario.get("description", ""), str):
        errors.append(f"{where}.description: " + gettext("must be text"))
    return errors + _actions_errors(scenario.get("actions", []), where, trigger, check)


def _devices_errors(devices: list[str], where: str, trigger: str, check: _Check) -> list[str]:
    """A scenario limited to some lines: each must be a device of the tenant's, and in no other
    scenario of the trigger."""
    if check.context is None:
        return []
    errors = []
    for number in devices:
        ids = check.context.devices.get(number)
        if not ids:
            errors.append(
                f"{where}.devices: "
                + gettext("%(number)s is not the line of an active device") % {"number": number}
            )
            continue
        for device_id in ids:
            first = check.per_device.setdefault((trigger, device_id), where)
            if first != where:
                errors.append(
                    f"{where}.devices: "
                    + gettext("%(number)s is already in %(other)s for this trigger")
                    % {"number": number, "other": first}
                )
                break
    return errors


def _actions_errors(actions: Any, where: str, trigger: Any, check: _Check) -> list[str]:
    if not isinstance(actions, list):
        return [_not_list(f"{where}.actions")]
    errors = []
    creations = 0
    for index, action in enumerate(actions):
        at = f"{where}.actions[{index}]"
        if not isinstance(action, dict):
            errors.append(_not_object(at))
            continue
        unknown = set(action) - set(CONFIG_FIELDS)
        if unknown:
            errors.append(_unknown_keys(at, unknown))
            continue
        config = _with_secret({**ACTION_DEFAULTS, **action}, check.context)
        problems = action_errors(
            config, trigger=trigger if isinstance(trigger, str) else "", allow_http=check.allow_http
        )
        if not problems and check.context is not None:
            problems = action_catalog_errors(config, check.context.catalog)
        errors += [f"{at}.{name}: {message}" for name, message in problems.items()]
        # ACTION_DEFAULTS has every setting but action_type.
        creations += config.get("action_type") in CREATION_TYPES and config["is_active"]
    if creations > 1:
        errors.append(f"{where}.actions: " + gettext("at most one active lead or deal creation"))
    return errors


def _is_db_id(value: Any) -> bool:
    return _is_whole(value, minimum=1) and value <= MAX_ID


def _routing_errors(routing: Any) -> list[str]:
    """`routing`: each of `settings` and `rules` is optional; one left out is left untouched."""
    if not isinstance(routing, dict):
        return ["routing: " + gettext("must be an object with 'settings' and/or 'rules'")]
    errors = []
    unknown = set(routing) - {"settings", "rules"}
    if unknown:
        errors.append(_unknown_keys("routing", unknown))
    if "settings" in routing:
        errors += _routing_settings_errors(routing["settings"])
    if "rules" in routing:
        rules = routing["rules"]
        if not isinstance(rules, list):
            return [*errors, _not_list("routing.rules")]
        names: set[str] = set()
        for index, rule in enumerate(rules):
            errors += _routing_rule_errors(rule, f"routing.rules[{index}]", names)
    return errors


def _routing_settings_errors(settings: Any) -> list[str]:
    where = "routing.settings"
    if not isinstance(settings, dict):
        return [_not_object(where)]
    errors = []
    unknown = set(settings) - set(ROUTING_SETTINGS_DEFAULTS)
    if unknown:
        errors.append(_unknown_keys(where, unknown))
    values = {**ROUTING_SETTINGS_DEFAULTS, **settings}
    for name in ("responsible_first", "use_timeman", "transfer_updates_responsible"):
        if not isinstance(values[name], bool):
            errors.append(_not_bool(f"{where}.{name}"))
    choices = {
        "others_target": RoutingSettings.OthersTarget.values,
        "missed_to": RoutingSettings.MissedTo.values,
    }
    for name, allowed in choices.items():
        if values[name] not in allowed:
            errors.append(f"{where}.{name}: " + must_be_one_of(allowed))
    user = values["others_user_id"]
    if user is not None and not _is_db_id(user):
        errors.append(f"{where}.others_user_id: " + gettext("must be a Bitrix24 user id or null"))
    elif user is None and values["others_target"] == RoutingSettings.OthersTarget.USER:
        errors.append(
            f"{where}.others_user_id: " + gettext("'others_target' 'user' needs the user's id")
        )
    return errors


def _routing_rule_errors(rule: Any, where: str, names: set[str]) -> list[str]:
    if not isinstance(rule, dict):
        return [_not_object(where)]
    errors = []
    unknown = set(rule) - set(RULE_KEYS)
    if unknown:
        errors.append(
            f"{where}: "
            + gettext("unknown keys %(keys)s (the order is the list's order)")
            % {"keys": sorted(unknown)}
        )
    name = rule.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        errors.append(_bad_name(f"{where}.name"))
    elif name.strip() in names:
        errors.append(
            f"{where}.name: "
            + gettext("%(name)s appears twice (rule names are unique)")
            % {"name": repr(name.strip())}
        )
    else:
        names.add(name.strip())
    if not isinstance(rule.get("enabled", True), bool):
        errors.append(_not_bool(f"{where}.enabled"))
    target, department = rule.get("target"), rule.get("department_id")
    if department is not None and not _is_db_id(department):
        errors.append(
            f"{where}.department_id: " + gettext("must be a Bitrix24 department id or null")
        )
    elif target not in RoutingRule.Target.values:
        errors.append(
            f"{where}.target: "
            + gettext("unknown target %(target)s; use one of %(allowed)s")
            % {"target": repr(target), "allowed": RoutingRule.Target.values}
        )
    else:
        problems = target_errors(
            target=target, users=rule.get("users", []), department_id=department
        )
        errors += [f"{where}.{field}: {message}" for field, message in problems.items()]
    conditions = rule.get("conditions", [])
    if not isinstance(conditions, list):
        return [*errors, _not_list(f"{where}.conditions")]
    for index, condition in enumerate(conditions):
        errors += _routing_condition_errors(condition, f"{where}.conditions[{index}]")
    return errors


def _routing_condition_errors(condition: Any, where: str) -> list[str]:
    if not isinstance(condition, dict) or not {"source", "operator"} <= set(condition):
        return [
            f"{where}: "
            + gettext("must be an object with source, operator and optionally field, values")
        ]
    unknown = set(condition) - set(CONDITION_KEYS)
    if unknown:
        return [_unknown_keys(where, unknown)]
    source, operator = condition["source"], condition["operator"]
    field = condition.get("field", "")
    errors = {}
    if not isinstance(source, str) or source not in SOURCES:
        errors["source"] = gettext("unknown source %(source)s; use one of %(allowed)s") % {
            "source": repr(source),
            "allowed": list(SOURCES),
        }
    if not isinstance(operator, str) or operator not in OPERATORS:
        errors["operator"] = gettext("unknown operator %(operator)s; use one of %(allowed)s") % {
            "operator": repr(operator),
            "allowed": list(OPERATORS),
        }
    if not isinstance(field, str):
        errors["field"] = gettext("must be text (a field's name)")
    if not errors:
        errors = condition_errors(
            source=source, field=field, operator=operator, values=condition.get("values", [])
        )
    return [f"{where}.{name}: {message}" for name, message in errors.items()]


# --- The defaults of operations.md ------------------------------------------------------------

_LOG = {"action_type": "log_call"}
_CARD_FOR_AGENT = {"action_type": "show_card", "card_for": "agent"}
# An incoming call's card also opens for the user it is routed to (issue 6).
_CARD_FOR_BOTH = {"action_type": "show_card", "card_for": "both"}
_POST_CALL_SYNC = {"action_type": "post_call_sync", "timing": "delay", "delay_minutes": 5}

DEFAULT_CONFIGURATION: dict[str, Any] = {
    "format": FORMAT_NAME,
    "version": FORMAT_VERSION,
    "office_hours": {
        "weekly": [
            {"weekday": day, "opens_at": "09:00", "closes_at": "18:00"} for day in WEEKDAYS[:5]
        ],
        "holidays": [],
    },
    "scenarios": [
        {
            "trigger": Trigger.INCOMING_ANSWERED,
            "name": gettext_noop("Incoming call answered"),
            "actions": [_LOG, _CARD_FOR_BOTH, _POST_CALL_SYNC],
        },
        {
            "trigger": Trigger.INCOMING_MISSED,
            "name": gettext_noop("Incoming call missed"),
            "actions": [
                _LOG,
                {
                    "action_type": "notify",
                    "responsible": "routed",
                    "recipients": ["responsible"],
                    "text_template": gettext_noop(
                        "Missed call from {caller} ({number}) at {time}. {link}"
                    ),
                },
                {
                    "action_type": "callback_task",
                    "timing": "delay",
                    "delay_minutes": 30,
                    "responsible": "routed",
                    "title_template": gettext_noop("Call back {caller} ({number})"),
                    "text_template": gettext_noop("Missed call from {number} at {time}. {link}"),
                    "deadline_minutes": 120,
                    "deadline_in_working_time": True,
                },
            ],
        },
        {
            "trigger": Trigger.INCOMING_REJECTED,
            "name": gettext_noop("Incoming call rejected"),
            "actions": [_LOG],
        },
        {
            "trigger": Trigger.OUTGOING_ANSWERED,
            "name": gettext_noop("Outgoing call answered"),
            "actions": [_LOG, _CARD_FOR_AGENT, _POST_CALL_SYNC],
        },
        {
            "trigger": Trigger.OUTGOING_NOT_ANSWERED,
            "name": gettext_noop("Outgoing call not answered"),
            "actions": [_LOG],
        },
        {
            "trigger": Trigger.UNKNOWN_NUMBER,
            "name": gettext_noop("Unknown number"),
            "actions": [
                {
                    "action_type": "create_lead",
                    "responsible": "round_robin",
                    "lead_source_id": "CALL",
                    "title_template": gettext_noop("{call_kind} {number}"),
                }
            ],
        },
    ],
}


# --- The whole document: scenarios, office hours and routing ------------------------------------


def routing_rule_to_data(rule: RoutingRule) -> dict[str, Any]:
    """A rule as the document holds it; its position is its place in the list."""
    return {
        "name": rule.name,
        "enabled": rule.enabled,
        "target": rule.target,
        "users": list(rule.users or []),
        "department_id": rule.department_id,
        "conditions": [
            {
                "source": condition.source,
                "field": condition.field,
                "operator": condition.operator,
                "values": list(condition.values or []),
            }
            for condition in rule.conditions.all()
        ],
    }


def config_export() -> dict[str, Any]:
    """The tenant's whole configuration: `scenario_config_export` plus the routing."""

    settings = routing_settings_get()
    rules = RoutingRule.objects.prefetch_related("conditions").order_by("position", "pk")
    return {
        **scenario_config_export(),
        "routing": {
            "settings": {name: getattr(settings, name) for name in ROUTING_SETTINGS_DEFAULTS},
            "rules": [routing_rule_to_data(rule) for rule in rules],
        },
    }


def config_import(*, data: Any) -> dict[str, int]:
    """Replaces the tenant's whole configuration, routing included; invalid input changes
    nothing (every problem is found before the first write, and all is one transaction).

    `routing.settings` and `routing.rules` each replace their part when present; a document
    without them (an export from before routing was in the document) leaves routing as it is.
    Rules naming what the synced Bitrix24 directory lacks are imported and marked broken, as
    the older scenario actions (users, lead sources, pipelines of a new lead or deal) are
    imported and flagged: a configuration moves between tenants whose portals differ, and the
    next directory sync heals what exists there. The actions that change a record in Bitrix24
    (a status or stage, fields) or read a field (conditions, "before a date") are refused
    instead: Bitrix24 ignores a field it does not know, so nothing would ever tell.

    A webhook action without a `secret` keeps the secret stored for the same URL (an export
    leaves secrets out); `settings` and a scenario's `devices` (the lines' numbers) are part of
    the scenario side.
    """

    context = document_context()
    errors = config_errors(data, context)
    if errors:
        raise ConfigError(errors)
    routing = data.get("routing", {})
    with transaction.atomic():
        counts = _scenarios_replace(data, context)
        if "settings" in routing:
            RoutingSettings.objects.update_or_create(
                singleton=1, defaults={**ROUTING_SETTINGS_DEFAULTS, **routing["settings"]}
            )
            counts["routing_settings"] = 1
        if "rules" in routing:
            counts.update(_routing_rules_replace(routing["rules"]))
    return counts


def _routing_rules_replace(rules: list[dict[str, Any]]) -> dict[str, int]:
    gone = list(RoutingRule.objects.values_list("pk", flat=True))
    RoutingRule.objects.all().delete()  # their conditions too
    # Turns are kept per rule id: the replaced rules' cursors would never be read again.
    RoundRobinCursor.objects.filter(key__in=[f"route:{pk}" for pk in gone]).delete()
    created, conditions = [], 0
    for index, item in enumerate(rules, start=1):
        rule = RoutingRule.objects.create(
            name=item["name"].strip(),
            position=index * 10,
            enabled=item.get("enabled", True),
            target=item["target"],
            users=item.get("users", []),
            department_id=item.get("department_id"),
        )
        RoutingCondition.objects.bulk_create(
            RoutingCondition(
                rule=rule,
                position=(number + 1) * 10,
                source=condition["source"],
                field=condition.get("field", ""),
                operator=condition["operator"],
                # Stored as the admin stores them (the evaluator compares text anyway).
                values=[str(value) for value in condition.get("values", [])],
            )
            for number, condition in enumerate(item.get("conditions", []))
        )
        conditions += len(item.get("conditions", []))
        created.append(rule.pk)
    broken = routing_rules_check(rule_ids=created)
    return {
        "routing_rules": len(created),
        "routing_conditions": conditions,
        "routing_rules_broken": broken,
    }


def scenario_config_import(*, data: Any) -> dict[str, int]:
    """Replaces the scenarios, office hours and holidays; invalid input changes nothing.

    The scenario part of a configuration document: `config_import` imports the whole document
    (routing included) and is what the admin and the commands call.
    """
    context = document_context()
    errors = config_errors(data, context)
    if errors:
        raise ConfigError(errors)
    return _scenarios_replace(data, context)


def _scenarios_replace(data: Any, context: DocumentContext) -> dict[str, int]:
    """Writes the scenario part of a document `config_errors` found valid."""
    hours = data.get("office_hours", {})
    with transaction.atomic():
        if "settings" in data:
            ScenarioSettings.objects.update_or_create(
                singleton=1,
                defaults={
                    "webhooks_allow_http": data["settings"].get("webhooks_allow_http", False)
                },
            )
        Scenario.objects.all().delete()
        OfficeHours.objects.all().delete()
        Holiday.objects.all().delete()
        OfficeHours.objects.bulk_create(
            OfficeHours(
                weekday=WEEKDAYS.index(period["weekday"]),
                opens_at=time.fromisoformat(period["opens_at"]),
                closes_at=time.fromisoformat(period["closes_at"]),
            )
            for period in hours.get("weekly", [])
        )
        Holiday.objects.bulk_create(
            Holiday(
                date=holiday["date"],
                name=holiday.get("name", ""),
                every_year=holiday.get("every_year", False),
            )
            for holiday in hours.get("holidays", [])
        )
        actions = 0
        for item in data.get("scenarios", []):
            scenario = Scenario.objects.create(
                trigger=item["trigger"],
                name=item["name"].strip(),
                is_active=item.get("is_active", True),
                description=item.get("description", ""),
            )
            scenario.devices.set(
                [pk for number in item.get("devices", []) for pk in context.devices[number]]
            )
            ScenarioAction.objects.bulk_create(
                ScenarioAction(
                    scenario=scenario,
                    position=(index + 1) * 10,
                    **_with_secret({**ACTION_DEFAULTS, **action}, context),
                )
                for index, action in enumerate(item.get("actions", []))
            )
            actions += len(item.get("actions", []))
    return {
        "scenarios": len(data.get("scenarios", [])),
        "actions": actions,
        "office_hours": len(hours.get("weekly", [])),
        "holidays": len(hours.get("holidays", [])),
    }


def default_configuration(language: str = "en") -> dict[str, Any]:
    """The default scenarios of operations.md, their names and templates in `language`."""
    data = copy.deepcopy(DEFAULT_CONFIGURATION)
    with translation.override(language):
        for item in data["scenarios"]:
            item["name"] = gettext(item["name"])
            for action in item["actions"]:
                for name in ("text_template", "title_template"):
                    if action.get(name):
                        action[name] = gettext(action[name])
    return data


def scenarios_install_defaults() -> bool:
    """The default scenarios of operations.md, for a tenant that has none yet, in the tenant's
    language."""
    if Scenario.objects.exists():
        return False
    scenario_config_import(data=default_configuration(tenant_language()))
    return True


def scenario_config_export() -> dict[str, Any]:
    """Scenarios, office hours and holidays in the documented JSON format (routing excluded:
    `config_export` gives the whole document)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "exported_at": timezone.now().isoformat(timespec="seconds"),
        "office_hours": {
            "weekly": [
                {
                    "weekday": WEEKDAYS[period.weekday],
                    "opens_at": f"{period.opens_at:%H:%M}",
                    "closes_at": f"{period.closes_at:%H:%M}",
                }
                for period in OfficeHours.objects.order_by("weekday", "opens_at")
            ],
            "holidays": [
                {"date": holiday.date.isoformat(), "name": holiday.name, "every_year": True}
                if holiday.every_year
                else {"date": holiday.date.isoformat(), "name": holiday.name}
                for holiday in Holiday.objects.order_by("date")
            ],
        },
        "settings": {name: getattr(scenario_settings_get(), name) for name in SETTINGS_KEYS},
        "scenarios": [_scenario_to_data(scenario) for scenario in _scenarios_in_order()],
    }


def _scenarios_in_order() -> list[Scenario]:
    """By trigger, the tenant-wide scenario of each first, then those limited to devices."""
    rows = Scenario.objects.prefetch_related("actions", "devices")
    return sorted(rows, key=lambda s: (s.trigger, bool(s.devices.all()), s.pk))


def _scenario_to_data(scenario: Scenario) -> dict[str, Any]:
    data: dict[str, Any] = {
        "trigger": scenario.trigger,
        "name": scenario.name,
        "is_active": scenario.is_active,
        "description": scenario.description,
    }
    # A revoked phone takes no calls: its line is left out (and could not be imported).
    lines = sorted(
        {device.phone_number for device in scenario.devices.all() if device.revoked_at is None}
    )
    if lines:
        data["devices"] = lines
    data["actions"] = [action_to_data(action.as_config()) for action in scenario.actions.all()]
    return data
