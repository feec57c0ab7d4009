"""Per-row rules of a scenario's configuration, pure: an action's settings, message templates,
weekly opening hours. The models' clean() and the configuration document both use them."""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from datetime import time
from typing import Any, TypeGuard

from django.utils.translation import gettext, gettext_lazy

from crm.validators import AddressProblem, address_parse
from scenarios.choices import (
    CREATION_TYPES,
    LIFECYCLE_TYPES,
    NEEDS_RESPONSIBLE,
    NEEDS_TARGET,
    NEEDS_TEXT,
    ActionType,
    AutomationTarget,
    CardFor,
    Hours,
    Recipient,
    Responsible,
    Timing,
    Trigger,
)
from scenarios.routing.rules import FIELD_NAME_RE, OPERATORS, SOURCES, condition_errors

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


# Placeholders a message template may use ({caller}, {number}, ...), with what they hold.
TEMPLATE_VARIABLES = {
    "caller": gettext_lazy("the caller's CRM name, or the number when unknown"),
    "number": gettext_lazy("the other party's number (E.164)"),
    "time": gettext_lazy("when the call started, in the tenant's timezone (YYYY-MM-DD HH:MM)"),
    "outcome": gettext_lazy("answered, missed, rejected, busy, no answer, failed or cancelled"),
    "direction": gettext_lazy("incoming or outgoing"),
    "call_kind": gettext_lazy("'Incoming call' or 'Outgoing call'"),
    "duration": gettext_lazy("talk time as M:SS"),
    "link": gettext_lazy("the CRM entity's URL (empty when unknown)"),
    "agent": gettext_lazy("the name of the device that took the call"),
    "line": gettext_lazy("the device's SIM number"),
}


AUTOMATION_CODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


MAX_DELAY_MINUTES = 60 * 24 * 60  # 60 days
# "Update fields" leaves these to what they are for: the ID never changes, a status or stage is
# "change the status" (checked against the deal's pipeline), a pipeline is fixed (crm.deal.update).
FIELDS_NOT_UPDATED = frozenset({"ID", "STATUS_ID", "STAGE_ID", "CATEGORY_ID"})
MAX_FIELDS = 50
CONDITION_KEYS = ("source", "field", "operator", "values")


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
        return [
            gettext("malformed template (%(error)s); write a literal brace as {{ or }}")
            % {"error": exc}
        ]
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_VARIABLES or spec or conversion:
            allowed = ", ".join(f"{{{v}}}" for v in TEMPLATE_VARIABLES)
            problems.append(
                gettext("unknown placeholder %(placeholder)s; use one of %(allowed)s")
                % {"placeholder": f"{{{name}}}", "allowed": allowed}
            )
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


def _is_user_id(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_whole(value: Any, *, minimum: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def action_errors(
    config: dict[str, Any], *, trigger: str, allow_http: bool = False
) -> dict[str, str]:
    """Problems of one action's settings, by field name. `allow_http`: the tenant lets
    webhooks post to http:// addresses."""
    kind = config.get("action_type")
    if kind not in ActionType.values:
        return {
            "action_type": gettext("unknown action type %(type)s; use one of %(allowed)s")
            % {"type": repr(kind), "allowed": ActionType.values}
        }
    errors = _value_errors(config)
    errors.update(_new_value_errors(config))
    errors.update(_placement_errors(kind, config, trigger))
    errors.update(_type_errors(kind, config))
    errors.update(_new_type_errors(kind, config, allow_http=allow_http))
    return errors


def _new_value_errors(config: dict[str, Any]) -> dict[str, str]:
    """The settings of the actions of issue 18, each on its own."""
    errors: dict[str, str] = {}
    for name in ("target", "date_of"):
        if (config.get(name) or "") not in ("", *AutomationTarget.values):
            errors[name] = must_be_one_of(AutomationTarget.values)
    status = config.get("status_id") or ""
    if not isinstance(status, str) or len(status) > 50:
        errors["status_id"] = gettext("must be a Bitrix24 id of at most 50 characters")
    problem = fields_problem(config.get("fields"))
    if problem:
        errors["fields"] = problem
    for name, limit in (("url", 500), ("secret", 200)):
        value = config.get(name) or ""
        if not isinstance(value, str) or len(value) > limit:
            errors[name] = gettext("must be text of at most %(limit)s characters") % {
                "limit": limit
            }
    date_field = config.get("date_field") or ""
    if not isinstance(date_field, str) or (date_field and not FIELD_NAME_RE.match(date_field)):
        errors["date_field"] = gettext("must be a field's name as Bitrix24 names it")
    problem = conditions_problem(config.get("conditions"))
    if problem:
        errors["conditions"] = problem
    return errors


def fields_problem(fields: Any) -> str | None:
    """What is wrong with the fields an "update fields" action sets (None: nothing)."""
    if not isinstance(fields, dict):
        return gettext("must be an object: field name -> value")
    if len(fields) > MAX_FIELDS:
        return gettext("at most %(count)s fields") % {"count": MAX_FIELDS}
    return next(
        (problem for name, value in fields.items() if (problem := _field_problem(name, value))),
        None,
    )


def _field_problem(name: Any, value: Any) -> str | None:
    if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
        return gettext("%(field)s is not a field's name as Bitrix24 names it") % {
            "field": repr(name)
        }
    if name.upper() in FIELDS_NOT_UPDATED:
        return gettext(
            "%(field)s cannot be set here (a status or stage: use 'change the status')"
        ) % {"field": name}
    values = value if isinstance(value, list) else [value]
    scalar = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)
    if not scalar and not isinstance(value, bool):
        return gettext("%(field)s: a value is text, a number, true/false or a list of them") % {
            "field": name
        }
    for text in (v for v in values if isinstance(v, str)):
        problems = template_errors(text)
        if problems:
            return f"{name}: {problems[0]}"
    return None


def conditions_problem(conditions: Any) -> str | None:
    """What is wrong with an action's conditions, routing rules' shape (None: nothing)."""
    if not isinstance(conditions, list):
        return gettext("must be a list of conditions")
    for index, condition in enumerate(conditions):
        errors = _condition_errors(condition)
        if errors:
            name, message = next(iter(errors.items()))
            return f"[{index}]{'.' + name if name else ''}: {message}"
    return None


def _condition_errors(condition: Any) -> dict[str, str]:
    """One condition's problems by key ("" for the whole condition)."""
    if not isinstance(condition, dict) or not {"source", "operator"} <= set(condition):
        return {"": gettext("must be an object with source, operator and optionally field, values")}
    unknown = set(condition) - set(CONDITION_KEYS)
    if unknown:
        return {"": gettext("unknown keys %(keys)s") % {"keys": sorted(unknown)}}
    source, operator = condition["source"], condition["operator"]
    field = condition.get("field", "")
    errors = {}
    if not isinstance(source, str) or source not in SOURCES:
        errors["source"] = must_be_one_of(list(SOURCES))
    if not isinstance(operator, str) or operator not in OPERATORS:
        errors["operator"] = must_be_one_of(list(OPERATORS))
    if not isinstance(field, str):
        errors["field"] = gettext("must be text (a field's name)")
    return errors or condition_errors(
        source=source, field=field, operator=operator, values=condition.get("values", [])
    )


def webhook_url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why SIMtrix will not post to `url` (None: it may). As written: https (http when the
    tenant allows it), a host that is not this server or a private network unless the operator
    allows those (SIMTRIX_ALLOW_PRIVATE_ADDRESSES), no user:password; crm.outbound checks what
    the name resolves to when it connects."""
    try:
        address_parse(url, allow_http=allow_http, allow_query=True)
    except AddressProblem as exc:
        return str(exc)
    return None


def _new_type_errors(kind: str, config: dict[str, Any], *, allow_http: bool) -> dict[str, str]:
    """What the actions of issue 18 need filled in, and where a timing or condition fits."""
    errors: dict[str, str] = {}
    if kind in NEEDS_TARGET and not config.get("target"):
        errors["target"] = gettext("choose what it works on: %(allowed)s") % {
            "allowed": AutomationTarget.values
        }
    if kind == ActionType.SET_STATUS and not config.get("status_id"):
        errors["status_id"] = gettext("this action needs it")
    if kind == ActionType.UPDATE_FIELDS and not config.get("fields") and "fields" not in errors:
        errors["fields"] = gettext("name at least one field")
    if kind == ActionType.WEBHOOK:
        url = config.get("url") or ""
        problem = webhook_url_problem(url, allow_http=allow_http) if url else None
        if not url:
            errors["url"] = gettext("this action needs it")
        elif problem:
            errors["url"] = gettext("not an address SIMtrix posts to: %(problem)s") % {
                "problem": problem
            }
        if not (config.get("secret") or "").strip():
            errors["secret"] = gettext("a webhook needs a secret to sign its requests")
    if config.get("timing") == Timing.BEFORE_DATE:
        if not config.get("date_field"):
            errors.setdefault("date_field", gettext("name the date field"))
        if not config.get("date_of"):
            errors["date_of"] = gettext("choose whose date: %(allowed)s") % {
                "allowed": AutomationTarget.values
            }
    if kind in CREATION_TYPES and config.get("timing") == Timing.BEFORE_DATE:
        errors["timing"] = gettext("a lead or deal is created at once, before any date exists")
    if kind in LIFECYCLE_TYPES and config.get("conditions"):
        errors["conditions"] = gettext(
            "the call is always logged and its card always opens: no conditions here"
        )
    return errors


def _value_errors(config: dict[str, Any]) -> dict[str, str]:
    """Each field on its own: types, ranges, choices, templates."""
    errors: dict[str, str] = {}
    if config.get("timing") not in Timing.values:
        errors["timing"] = must_be_one_of(Timing.values)
    if config.get("hours") not in Hours.values:
        errors["hours"] = must_be_one_of(Hours.values)
    delay = config.get("delay_minutes")
    if not _is_whole(delay, minimum=0) or delay > MAX_DELAY_MINUTES:
        errors["delay_minutes"] = gettext(
            "must be a whole number of minutes from 0 to %(maximum)s"
        ) % {"maximum": MAX_DELAY_MINUTES}
    users = config.get("users")
    if not isinstance(users, list) or not all(_is_user_id(u) for u in users):
        errors["users"] = gettext("must be a list of Bitrix24 user ids (positive whole numbers)")
    recipients = config.get("recipients")
    if not isinstance(recipients, list) or not set(recipients) <= set(Recipient.values):
        errors["recipients"] = gettext("must be a list drawn from %(allowed)s") % {
            "allowed": Recipient.values
        }
    responsible = config.get("responsible") or ""
    if responsible and responsible not in Responsible.values:
        errors["responsible"] = must_be_one_of(Responsible.values)
    for name in ("title_template", "text_template"):
        problems = template_errors(config.get(name) or "")
        if problems:
            errors[name] = problems[0]
    deadline = config.get("deadline_minutes")
    if deadline is not None and not _is_whole(deadline, minimum=1):
        errors["deadline_minutes"] = gettext("must be a positive number of minutes (or empty)")
    pipeline = config.get("pipeline_id")
    if pipeline is not None and not _is_whole(pipeline, minimum=0):
        errors["pipeline_id"] = gettext(
            "must be a pipeline id (0 is the general pipeline) or empty"
        )
    for name in ("lead_status_id", "lead_source_id", "stage_id"):
        value = config.get(name) or ""
        if not isinstance(value, str) or len(value) > 50:
            errors[name] = gettext("must be a Bitrix24 id of at most 50 characters")
    return errors


def must_be_one_of(allowed: Any) -> str:
    """The message for a value outside its choices (`allowed`: the values, as written)."""
    return gettext("must be one of %(allowed)s") % {"allowed": allowed}


def _placement_errors(kind: str, config: dict[str, Any], trigger: str) -> dict[str, str]:
    """Which scenario an action may be in, and when it may run."""
    errors = {}
    if trigger == Trigger.UNKNOWN_NUMBER and kind in {
        ActionType.LOG_CALL,
        ActionType.POST_CALL_SYNC,
    }:
        errors["action_type"] = gettext(
            "the unknown-number scenario runs before the outcome's scenario, which logs the call"
        )
    if kind in CREATION_TYPES and trigger and trigger != Trigger.UNKNOWN_NUMBER:
        errors["action_type"] = gettext(
            "leads and deals are created only by the unknown-number scenario"
        )
    if kind in LIFECYCLE_TYPES and config.get("timing") != Timing.IMMEDIATELY:
        errors["timing"] = gettext(
            "the call is logged when it ends and the card opens while it rings"
        )
    return errors


def _type_errors(kind: str, config: dict[str, Any]) -> dict[str, str]:
    """What this type of action needs filled in."""
    errors = {}
    raw_users, raw_recipients = config.get("users"), config.get("recipients")
    users = raw_users if isinstance(raw_users, list) else []
    recipients = raw_recipients if isinstance(raw_recipients, list) else []
    text_field = NEEDS_TEXT.get(kind)
    if text_field and not (config.get(text_field) or "").strip():
        errors[text_field] = gettext("this action needs it")
    responsible = config.get("responsible") or ""
    needs_responsible = kind in NEEDS_RESPONSIBLE or (
        kind == ActionType.NOTIFY and Recipient.RESPONSIBLE in recipients
    )
    if needs_responsible and not responsible:
        errors["responsible"] = gettext("choose how the responsible user is found")
    if responsible == Responsible.FIXED and len(users) != 1:
        errors["users"] = gettext("a fixed responsible needs exactly one user id")
    if kind == ActionType.NOTIFY and not recipients and not users:
        errors["recipients"] = gettext("choose at least one recipient (or list user ids)")
    if kind == ActionType.SHOW_CARD and config.get("card_for") not in CardFor.values:
        errors["card_for"] = gettext("choose who sees the card: %(allowed)s") % {
            "allowed": CardFor.values
        }
    if kind == ActionType.TRIGGER_AUTOMATION:
        if not AUTOMATION_CODE_RE.match(config.get("automation_code") or ""):
            errors["automation_code"] = gettext(
                "the trigger's code: letters, digits, '.', '_' or '-'"
            )
        if config.get("automation_target") not in AutomationTarget.values:
            errors["automation_target"] = must_be_one_of(AutomationTarget.values)
    return errors


def hours_errors(
    periods: Sequence[tuple[int, time | None, time | None]],
    *,
    day_names: Sequence[str] = WEEKDAYS,
) -> list[str]:
    """Problems of a set of weekly opening periods (bad order, overlaps); a day is named as
    `day_names` has it (the document's weekday keys, or the admin's day names)."""
    problems = []
    by_day: dict[int, list[tuple[int, int]]] = {}
    for weekday, opens, closes in periods:
        if opens is None or closes is None:
            continue
        day = day_names[weekday]
        start = opens.hour * 60 + opens.minute
        end = closes.hour * 60 + closes.minute or 24 * 60
        if end <= start:
            problems.append(
                gettext(
                    "%(day)s: closes at %(closes)s, not after it opens at %(opens)s "
                    "(split a period that crosses midnight into two days)"
                )
                % {"day": day, "closes": f"{closes:%H:%M}", "opens": f"{opens:%H:%M}"}
            )
            continue
        by_day.setdefault(weekday, []).append((start, end))
    for weekday, spans in sorted(by_day.items()):
        spans.sort()
        for (_, first_end), (second_start, _) in itertools.pairwise(spans):
            if second_start < first_end:
                problems.append(
                    gettext("%(day)s: opening periods overlap") % {"day": day_names[weekday]}
                )
    return problems
