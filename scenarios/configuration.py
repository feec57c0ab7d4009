"""A tenant's scenario configuration as plain data: validation, the JSON format, the defaults.

Pure: nothing here touches the database. The admin forms, the import command and the installer
all validate through `config_errors` / `action_errors`, so a rule is written once and every entry
point gives the same message. The format is documented in docs/configuration.md.
"""

from __future__ import annotations

import itertools
import re
import string
from datetime import date, time
from typing import Any

from scenarios.models import CONFIG_FIELDS, ActionType, ScenarioAction, Trigger

FORMAT_NAME = "simtrix-configuration"
FORMAT_VERSION = 1

Action = ScenarioAction
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# Placeholders a message template may use ({caller}, {number}, ...), with what they hold.
TEMPLATE_VARIABLES = {
    "caller": "the caller's CRM name, or the number when unknown",
    "number": "the other party's number (E.164)",
    "time": "when the call started, in the tenant's timezone (YYYY-MM-DD HH:MM)",
    "outcome": "answered, missed, rejected, busy, no answer, failed or cancelled",
    "direction": "incoming or outgoing",
    "call_kind": "'Incoming call' or 'Outgoing call'",
    "duration": "talk time as M:SS",
    "link": "the CRM entity's URL (empty when unknown)",
    "agent": "the name of the device that took the call",
    "line": "the device's SIM number",
}

# Types planned at ring time or as part of the call's own lifecycle in Bitrix24.
LIFECYCLE_TYPES = frozenset({ActionType.LOG_CALL, ActionType.SHOW_CARD})
CREATION_TYPES = frozenset({ActionType.CREATE_LEAD, ActionType.CREATE_DEAL})
# Types that need a Bitrix24 user chosen by a responsible strategy.
NEEDS_RESPONSIBLE = frozenset(
    {ActionType.CALLBACK_TASK, ActionType.CREATE_LEAD, ActionType.CREATE_DEAL}
)
NEEDS_TEXT = {
    ActionType.NOTIFY: "text_template",
    ActionType.TIMELINE_COMMENT: "text_template",
    ActionType.CALLBACK_TASK: "title_template",
    ActionType.CREATE_LEAD: "title_template",
    ActionType.CREATE_DEAL: "title_template",
}
AUTOMATION_CODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
MAX_DELAY_MINUTES = 60 * 24 * 60  # 60 days


class ConfigError(ValueError):
    """An invalid configuration; `errors` lists every problem as 'path: message'."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def template_errors(text: str) -> list[str]:
    """Problems of a message template: unknown or malformed placeholders."""
    problems = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f"malformed template ({exc}); write a literal brace as {{{{ or }}}}"]
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_VARIABLES or spec or conversion:
            allowed = ", ".join(f"{{{v}}}" for v in TEMPLATE_VARIABLES)
            problems.append(f"unknown placeholder {{{name}}}; use one of {allowed}")
    return problems


def template_render(text: str, values: dict[str, str]) -> str:
    """Fills a validated template; anything unexpected is left as written, never evaluated."""
    out = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return text
    for literal, name, _, _ in parsed:
        out.append(literal)
        if name is not None:
            out.append(values.get(name, "{" + name + "}"))
    return "".join(out)


def _is_user_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_whole(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def action_errors(config: dict[str, Any], *, trigger: str) -> dict[str, str]:
    """Problems of one action's settings, by field name."""
    kind = config.get("action_type")
    if kind not in ActionType.values:
        return {"action_type": f"unknown action type {kind!r}; use one of {ActionType.values}"}
    errors = _value_errors(config)
    errors.update(_placement_errors(kind, config, trigger))
    errors.update(_type_errors(kind, config))
    return errors


def _value_errors(config: dict[str, Any]) -> dict[str, str]:
    """Each field on its own: types, ranges, choices, templates."""
    errors: dict[str, str] = {}
    if config.get("timing") not in Action.Timing.values:
        errors["timing"] = f"must be one of {Action.Timing.values}"
    if config.get("hours") not in Action.Hours.values:
        errors["hours"] = f"must be one of {Action.Hours.values}"
    delay = config.get("delay_minutes")
    if not _is_whole(delay, minimum=0) or delay > MAX_DELAY_MINUTES:
        errors["delay_minutes"] = f"must be a whole number of minutes from 0 to {MAX_DELAY_MINUTES}"
    users = config.get("users")
    if not isinstance(users, list) or not all(_is_user_id(u) for u in users):
        errors["users"] = "must be a list of Bitrix24 user ids (positive whole numbers)"
    recipients = config.get("recipients")
    if not isinstance(recipients, list) or not set(recipients) <= set(Action.Recipient.values):
        errors["recipients"] = f"must be a list drawn from {Action.Recipient.values}"
    responsible = config.get("responsible") or ""
    if responsible and responsible not in Action.Responsible.values:
        errors["responsible"] = f"must be one of {Action.Responsible.values}"
    for name in ("title_template", "text_template"):
        problems = template_errors(config.get(name) or "")
        if problems:
            errors[name] = problems[0]
    deadline = config.get("deadline_minutes")
    if deadline is not None and not _is_whole(deadline, minimum=1):
        errors["deadline_minutes"] = "must be a positive number of minutes (or empty)"
    pipeline = config.get("pipeline_id")
    if pipeline is not None and not _is_whole(pipeline, minimum=0):
        errors["pipeline_id"] = "must be a pipeline id (0 is the general pipeline) or empty"
    for name in ("lead_status_id", "lead_source_id", "stage_id"):
        value = config.get(name) or ""
        if not isinstance(value, str) or len(value) > 50:
            errors[name] = "must be a Bitrix24 id of at most 50 characters"
    return errors


def _placement_errors(kind: str, config: dict[str, Any], trigger: str) -> dict[str, str]:
    """Which scenario an action may be in, and when it may run."""
    errors = {}
    if trigger == Trigger.UNKNOWN_NUMBER and kind in {
        ActionType.LOG_CALL,
        ActionType.POST_CALL_SYNC,
    }:
        errors["action_type"] = (
            "the unknown-number scenario runs before the outcome's scenario, which logs the call"
        )
    if kind in CREATION_TYPES and trigger and trigger != Trigger.UNKNOWN_NUMBER:
        errors["action_type"] = "leads and deals are created only by the unknown-number scenario"
    if kind in LIFECYCLE_TYPES and config.get("timing") != Action.Timing.IMMEDIATELY:
        errors["timing"] = "the call is logged when it ends and the card opens while it rings"
    return errors


def _type_errors(kind: str, config: dict[str, Any]) -> dict[str, str]:
    """What this type of action needs filled in."""
    errors = {}
    users = config.get("users") if isinstance(config.get("users"), list) else []
    recipients = config.get("recipients") if isinstance(config.get("recipients"), list) else []
    text_field = NEEDS_TEXT.get(kind)
    if text_field and not (config.get(text_field) or "").strip():
        errors[text_field] = "this action needs it"
    responsible = config.get("responsible") or ""
    needs_responsible = kind in NEEDS_RESPONSIBLE or (
        kind == ActionType.NOTIFY and Action.Recipient.RESPONSIBLE in recipients
    )
    if needs_responsible and not responsible:
        errors["responsible"] = "choose how the responsible user is found"
    if responsible == Action.Responsible.FIXED and len(users) != 1:
        errors["users"] = "a fixed responsible needs exactly one user id"
    if kind == ActionType.NOTIFY and not recipients and not users:
        errors["recipients"] = "choose at least one recipient (or list user ids)"
    if kind == ActionType.SHOW_CARD and config.get("card_for") not in Action.CardFor.values:
        errors["card_for"] = f"choose who sees the card: {Action.CardFor.values}"
    if kind == ActionType.TRIGGER_AUTOMATION:
        if not AUTOMATION_CODE_RE.match(config.get("automation_code") or ""):
            errors["automation_code"] = "the trigger's code: letters, digits, '.', '_' or '-'"
        if config.get("automation_target") not in Action.AutomationTarget.values:
            errors["automation_target"] = f"must be one of {Action.AutomationTarget.values}"
    return errors


def hours_errors(periods: list[tuple[int, time | None, time | None]]) -> list[str]:
    """Problems of a set of weekly opening periods (bad order, overlaps)."""
    problems = []
    by_day: dict[int, list[tuple[int, int]]] = {}
    for weekday, opens, closes in periods:
        if opens is None or closes is None:
            continue
        day = WEEKDAYS[weekday]
        start = opens.hour * 60 + opens.minute
        end = closes.hour * 60 + closes.minute or 24 * 60
        if end <= start:
            problems.append(
                f"{day}: closes at {closes:%H:%M}, not after it opens at {opens:%H:%M} "
                "(split a period that crosses midnight into two days)"
            )
            continue
        by_day.setdefault(weekday, []).append((start, end))
    for weekday, spans in sorted(by_day.items()):
        spans.sort()
        for (_, first_end), (second_start, _) in itertools.pairwise(spans):
            if second_start < first_end:
                problems.append(f"{WEEKDAYS[weekday]}: opening periods overlap")
    return problems


# --- The JSON format ------------------------------------------------------------------------


def _field_default(name: str) -> Any:
    field = ScenarioAction._meta.get_field(name)
    if field.has_default():
        return field.get_default()
    return None if field.null else ""


# What an action field holds when an imported action leaves it out.
ACTION_DEFAULTS: dict[str, Any] = {name: _field_default(name) for name in CONFIG_FIELDS[1:]}


def action_to_data(config: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the defaults, so an export reads like the admin form."""
    data = {"action_type": config["action_type"]}
    for name in CONFIG_FIELDS:
        if name != "action_type" and config.get(name) != ACTION_DEFAULTS.get(name):
            data[name] = config[name]
    return data


def _time_parse(value: Any) -> time | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{2}:\d{2}", value):
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


def config_errors(data: Any) -> list[str]:
    """Every problem of an imported configuration, each as 'where: what'."""
    if not isinstance(data, dict):
        return ["the configuration must be a JSON object"]
    errors = []
    if data.get("format") != FORMAT_NAME:
        errors.append(f"format: must be {FORMAT_NAME!r}")
    if data.get("version") != FORMAT_VERSION:
        errors.append(f"version: must be {FORMAT_VERSION}")
    unknown = set(data) - {"format", "version", "exported_at", "office_hours", "scenarios"}
    if unknown:
        errors.append(f"unknown keys: {sorted(unknown)}")
    errors += _office_hours_errors(data.get("office_hours", {}))
    scenarios = data.get("scenarios", [])
    if not isinstance(scenarios, list):
        return [*errors, "scenarios: must be a list"]
    seen: set[str] = set()
    for index, scenario in enumerate(scenarios):
        errors += _scenario_errors(scenario, f"scenarios[{index}]", seen)
    return errors


def _office_hours_errors(hours: Any) -> list[str]:
    if not isinstance(hours, dict):
        return ["office_hours: must be an object with 'weekly' and 'holidays'"]
    errors = []
    unknown = set(hours) - {"weekly", "holidays"}
    if unknown:
        errors.append(f"office_hours: unknown keys {sorted(unknown)}")
    weekly = hours.get("weekly", [])
    periods = []
    if not isinstance(weekly, list):
        errors.append("office_hours.weekly: must be a list")
        weekly = []
    for index, period in enumerate(weekly):
        where = f"office_hours.weekly[{index}]"
        if not isinstance(period, dict) or set(period) != {"weekday", "opens_at", "closes_at"}:
            errors.append(f"{where}: must have exactly weekday, opens_at and closes_at")
            continue
        if period["weekday"] not in WEEKDAYS:
            errors.append(f"{where}.weekday: must be one of {list(WEEKDAYS)}")
            continue
        opens, closes = _time_parse(period["opens_at"]), _time_parse(period["closes_at"])
        if opens is None or closes is None:
            errors.append(f"{where}: times must be HH:MM (24 h), 00:00 closing = midnight")
            continue
        periods.append((WEEKDAYS.index(period["weekday"]), opens, closes))
    errors += [f"office_hours.weekly: {problem}" for problem in hours_errors(periods)]
    return errors + _holidays_errors(hours.get("holidays", []))


def _holidays_errors(holidays: Any) -> list[str]:
    if not isinstance(holidays, list):
        return ["office_hours.holidays: must be a list"]
    errors = []
    dates = set()
    for index, holiday in enumerate(holidays):
        where = f"office_hours.holidays[{index}]"
        if not isinstance(holiday, dict) or not {"date"} <= set(holiday) <= {
            "date",
            "name",
            "every_year",
        }:
            errors.append(f"{where}: must have date and optionally name, every_year")
            continue
        try:
            day = date.fromisoformat(holiday["date"])
        except (TypeError, ValueError):
            errors.append(f"{where}.date: must be YYYY-MM-DD")
            continue
        if day in dates:
            errors.append(f"{where}.date: {day} is listed twice")
        dates.add(day)
        if not isinstance(holiday.get("name", ""), str) or len(holiday.get("name", "")) > 100:
            errors.append(f"{where}.name: must be text of at most 100 characters")
        if not isinstance(holiday.get("every_year", False), bool):
            errors.append(f"{where}.every_year: must be true or false")
    return errors


def _scenario_errors(scenario: Any, where: str, seen: set[str]) -> list[str]:
    if not isinstance(scenario, dict):
        return [f"{where}: must be an object"]
    errors = []
    unknown = set(scenario) - {"trigger", "name", "is_active", "description", "actions"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    trigger = scenario.get("trigger")
    if trigger not in Trigger.values:
        errors.append(f"{where}.trigger: must be one of {Trigger.values}")
    elif trigger in seen:
        errors.append(f"{where}.trigger: {trigger!r} appears twice (one scenario per outcome)")
    else:
        seen.add(trigger)
    name = scenario.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors.append(f"{where}.name: must be non-empty text of at most 100 characters")
    if not isinstance(scenario.get("is_active", True), bool):
        errors.append(f"{where}.is_active: must be true or false")
    if not isinstance(scenario.get("description", ""), str):
        errors.append(f"{where}.description: must be text")
    return errors + _actions_errors(scenario.get("actions", []), where, trigger)


def _actions_errors(actions: Any, where: str, trigger: Any) -> list[str]:
    if not isinstance(actions, list):
        return [f"{where}.actions: must be a list"]
    errors = []
    creations = 0
    for index, action in enumerate(actions):
        at = f"{where}.actions[{index}]"
        if not isinstance(action, dict):
            errors.append(f"{at}: must be an object")
            continue
        unknown = set(action) - set(CONFIG_FIELDS)
        if unknown:
            errors.append(f"{at}: unknown keys {sorted(unknown)}")
            continue
        config = {**ACTION_DEFAULTS, **action}
        problems = action_errors(config, trigger=trigger if isinstance(trigger, str) else "")
        errors += [f"{at}.{field}: {message}" for field, message in problems.items()]
        creations += config.get("action_type") in CREATION_TYPES and config.get("is_active")
    if creations > 1:
        errors.append(f"{where}.actions: at most one active lead or deal creation")
    return errors


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
            "name": "Incoming call answered",
            "actions": [_LOG, _CARD_FOR_BOTH, _POST_CALL_SYNC],
        },
        {
            "trigger": Trigger.INCOMING_MISSED,
            "name": "Incoming call missed",
            "actions": [
                _LOG,
                {
                    "action_type": "notify",
                    "responsible": "routed",
                    "recipients": ["responsible"],
                    "text_template": "Missed call from {caller} ({number}) at {time}. {link}",
                },
                {
                    "action_type": "callback_task",
                    "timing": "delay",
                    "delay_minutes": 30,
                    "responsible": "routed",
                    "title_template": "Call back {caller} ({number})",
                    "text_template": "Missed call from {number} at {time}. {link}",
                    "deadline_minutes": 120,
                    "deadline_in_working_time": True,
                },
            ],
        },
        {
            "trigger": Trigger.INCOMING_REJECTED,
            "name": "Incoming call rejected",
            "actions": [_LOG],
        },
        {
            "trigger": Trigger.OUTGOING_ANSWERED,
            "name": "Outgoing call answered",
            "actions": [_LOG, _CARD_FOR_AGENT, _POST_CALL_SYNC],
        },
        {
            "trigger": Trigger.OUTGOING_NOT_ANSWERED,
            "name": "Outgoing call not answered",
            "actions": [_LOG],
        },
        {
            "trigger": Trigger.UNKNOWN_NUMBER,
            "name": "Unknown number",
            "actions": [
                {
                    "action_type": "create_lead",
                    "responsible": "round_robin",
                    "lead_source_id": "CALL",
                    "title_template": "{call_kind} {number}",
                }
            ],
        },
    ],
}
