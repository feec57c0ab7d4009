"""Routing by CRM data: which person an incoming call goes to.

Pure evaluation over *facts* about the caller, so every rule can be tested and explained without
a database or a portal. The facts are plain data in domain terms (`crm` maps Bitrix24 fields to
them):

    {"entity_type": "contact" | "company" | "lead" | "",
     "entity": {"responsible": "5", "type": "CLIENT", "source": "CALL", "UF_CRM_X": ...},
     "responsible_id": 5 | None,
     "deals": [{"id": 71, "pipeline": "1", "stage": "C1:NEGOTIATION", "responsible": "9", ...}]}

A rule matches when all its entity conditions hold and, if it has deal conditions, one open deal
satisfies all of them ("any open deal matches", the same deal for every deal condition, so
"pipeline = Contracts and stage = Negotiation" means one deal in that pipeline and stage).

The database side (rules as rows, availability, round-robin turns, the broken-rule check) is in
`scenarios.services` / `scenarios.selectors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from django.utils.translation import gettext, gettext_lazy, gettext_noop

from crm.domain import RoutingFacts

EQUALS = "equals"
NOT_EQUALS = "not_equals"
CONTAINS = "contains"
NOT_CONTAINS = "not_contains"
EMPTY = "empty"
NOT_EMPTY = "not_empty"
OPERATORS = {
    EQUALS: "equals",
    NOT_EQUALS: "does not equal",
    CONTAINS: "contains",
    NOT_CONTAINS: "does not contain",
    EMPTY: "is empty",
    NOT_EMPTY: "is not empty",
}

SOURCE_ENTITY_TYPE = "entity_type"
SOURCE_ENTITY = "entity"
SOURCE_DEAL = "deal"
SOURCES = (SOURCE_ENTITY_TYPE, SOURCE_ENTITY, SOURCE_DEAL)
CALLER_TYPES = ("contact", "company", "lead")
VALUELESS = (EMPTY, NOT_EMPTY)
TARGET_RESPONSIBLE = "responsible"
TARGET_USER = "user"
TARGET_ROUND_ROBIN = "round_robin"
TARGET_QUEUE = "queue"
RESPONSIBLE_RULE = "Responsible user"
OTHERS_RULE = "Others"
# The operators as people read them (OPERATORS stays English: it is stored in explanations).
OPERATOR_NAMES = {
    EQUALS: gettext_lazy("equals"),
    NOT_EQUALS: gettext_lazy("does not equal"),
    CONTAINS: gettext_lazy("contains"),
    NOT_CONTAINS: gettext_lazy("does not contain"),
    EMPTY: gettext_lazy("is empty"),
    NOT_EMPTY: gettext_lazy("is not empty"),
}
# The steps of a decision that are not the tenant's rules, as a route stores them (in English:
# the bridge sees the rule's name) and as people read them.
STEP_TITLES = {
    RESPONSIBLE_RULE: gettext_lazy("Responsible user"),
    OTHERS_RULE: gettext_lazy("Others"),
    "CRM data": gettext_lazy("CRM data"),
    "Not routed": gettext_lazy("Not routed"),
}

# Fields in domain terms (crm.mapping.routing_facts); any other name is a Bitrix24 field name.
ENTITY_FIELDS = {
    "responsible": gettext_lazy("responsible user"),
    "type": gettext_lazy("type (contact or company type)"),
    "source": gettext_lazy("source"),
    "status": gettext_lazy("status (leads)"),
}
DEAL_FIELDS = {
    "pipeline": gettext_lazy("pipeline"),
    "stage": gettext_lazy("stage"),
    "responsible": gettext_lazy("responsible user"),
    "id": gettext_lazy("deal id"),
}
FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")


class RoutePerson(TypedDict):
    id: int
    name: str


class RouteNext(TypedDict):
    """Who takes a missed call next (the tenant's "missed calls go to the next" setting)."""

    user: RoutePerson
    rule: str | None


class Route(TypedDict, total=False):
    """Who takes a call and why: what `route_decide_call` decides and the call stores (its
    `route`). The bridge sees `user` and `rule`; the rest is the audit trail of the decision."""

    user: RoutePerson | None
    rule: str | None
    rule_id: int | None
    crm_status: str
    decided_at: str
    # Decided without the caller's CRM data (or the direction): decided again when known.
    provisional: bool
    next: RouteNext | None
    missed_by: RoutePerson | None
    unavailable: dict[str, str]
    explanation: list[dict[str, Any]]


@dataclass(frozen=True)
class Condition:
    source: str  # entity_type | entity | deal
    field: str  # e.g. "stage", "pipeline", "responsible", "UF_CRM_REGION" (unused for entity_type)
    operator: str
    values: tuple[str, ...] = ()

    def describe(self) -> str:
        subject = (
            "caller type" if self.source == SOURCE_ENTITY_TYPE else f"{self.source}.{self.field}"
        )
        values = ", ".join(self.values)
        return f"{subject} {OPERATORS.get(self.operator, self.operator)} {values}".strip()

    def describe_shown(self) -> str:
        """`describe` in the active language, for the admin's pages."""
        subject = (
            gettext("caller type")
            if self.source == SOURCE_ENTITY_TYPE
            else f"{self.source}.{self.field}"
        )
        values = ", ".join(self.values)
        return f"{subject} {OPERATOR_NAMES.get(self.operator, self.operator)} {values}".strip()


def condition_errors(*, source: str, field: str, operator: str, values: Any) -> dict[str, str]:
    """Problems of one condition's settings, by field name (admin forms and imports)."""
    errors: dict[str, str] = {}
    if source not in SOURCES:
        errors["source"] = gettext("must be one of %(allowed)s") % {"allowed": list(SOURCES)}
    if operator not in OPERATORS:
        errors["operator"] = gettext("must be one of %(allowed)s") % {"allowed": list(OPERATORS)}
    if not isinstance(values, list | tuple) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in values
    ):
        return {**errors, "values": gettext("must be a list of values")}
    if source == SOURCE_ENTITY_TYPE:
        if field:
            errors["field"] = gettext("leave it empty: the condition reads the caller's type")
        unknown = [v for v in values if str(v) not in CALLER_TYPES]
        if unknown:
            errors["values"] = gettext("caller types are %(types)s; not %(values)s") % {
                "types": ", ".join(CALLER_TYPES),
                "values": unknown,
            }
    elif source in (SOURCE_ENTITY, SOURCE_DEAL) and not FIELD_NAME_RE.match(field or ""):
        errors["field"] = gettext("name the field (e.g. stage, source or UF_CRM_REGION)")
    if operator in VALUELESS and values:
        errors["values"] = gettext("'%(operator)s' takes no values") % {
            "operator": OPERATOR_NAMES[operator]
        }
    elif operator in OPERATORS and operator not in VALUELESS and not values:
        errors.setdefault(
            "values",
            gettext("'%(operator)s' needs at least one value")
            % {"operator": OPERATOR_NAMES[operator]},
        )
    return errors


def target_errors(*, target: str, users: Any, department_id: int | None) -> dict[str, str]:
    """Problems of a rule's target settings, by field name."""
    if target not in (TARGET_RESPONSIBLE, TARGET_USER, TARGET_ROUND_ROBIN, TARGET_QUEUE):
        return {"target": gettext("choose a target")}
    if not isinstance(users, list) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in users
    ):
        return {"users": gettext("must be a list of Bitrix24 user ids")}
    errors = {}
    if target == TARGET_RESPONSIBLE and (users or department_id):
        errors["target"] = gettext("the responsible user is found from the CRM: choose no users")
    elif target == TARGET_USER and len(users) != 1:
        errors["users"] = gettext("choose exactly one user")
    elif target == TARGET_QUEUE and not users:
        errors["users"] = gettext("choose the queue's users, in order")
    elif target == TARGET_ROUND_ROBIN and bool(users) == bool(department_id):
        errors["users"] = gettext("choose either users or a department to go round")
    elif target != TARGET_ROUND_ROBIN and department_id:
        errors["department_id"] = gettext("a department is for round-robin only")
    return errors


@dataclass(frozen=True)
class ConditionResult:
    condition: str
    holds: bool
    detail: str


@dataclass
class RuleOutcome:
    matched: bool
    results: list[ConditionResult] = field(default_factory=list)
    deal: dict[str, Any] | None = None  # the open deal that satisfied the deal conditions


def _as_strings(value: Any) -> list[str]:
    """A field value as a list of strings: multi-value fields stay lists, empties become []."""
    if value is None:
        return []
    if isinstance(value, list | tuple | set):
        return [str(item).strip() for item in value if item not in (None, "")]
    if isinstance(value, dict):
        return [str(item).strip() for item in value.values() if item not in (None, "")]
    text = str(value).strip()
    return [text] if text else []


def value_matches(value: Any, operator: str, wanted: Sequence[str]) -> bool:
    """One operator on one field value.

    equals: the value (or one of a multi-value field's values) is one of the given values.
    contains: every given value is present - as an item of a multi-value field, or as a
    case-insensitive substring of a text. The negations are exact opposites.
    """
    present = _as_strings(value)
    wanted = [str(item).strip() for item in wanted]
    if operator == EMPTY:
        return not present
    if operator == NOT_EMPTY:
        return bool(present)
    if operator in (EQUALS, NOT_EQUALS):
        lowered = {item.casefold() for item in wanted}
        hit = any(item.casefold() in lowered for item in present)
        return hit if operator == EQUALS else not hit
    if operator in (CONTAINS, NOT_CONTAINS):
        if isinstance(value, list | tuple | set | dict):
            items = {item.casefold() for item in present}
            hit = all(item.casefold() in items for item in wanted)
        else:
            text = (present[0] if present else "").casefold()
            hit = all(item.casefold() in text for item in wanted)
        return hit if operator == CONTAINS else not hit
    raise ValueError(f"Unknown operator {operator!r}.")


def _entity_value(condition: Condition, facts: RoutingFacts) -> Any:
    if condition.source == SOURCE_ENTITY_TYPE:
        return facts.get("entity_type") or ""
    return (facts.get("entity") or {}).get(condition.field)


def rule_evaluate(conditions: Sequence[Condition], facts: RoutingFacts) -> RuleOutcome:
    outcome = RuleOutcome(matched=True)
    deal_conditions = [c for c in conditions if c.source == SOURCE_DEAL]
    for condition in conditions:
        if condition.source == SOURCE_DEAL:
            continue
        value = _entity_value(condition, facts)
        holds = value_matches(value, condition.operator, condition.values)
        outcome.results.append(
            ConditionResult(condition.describe(), holds, f"value: {_as_strings(value) or 'empty'}")
        )
        outcome.matched &= holds
    if deal_conditions:
        deals = facts.get("deals") or []
        matching = next(
            (
                deal
                for deal in deals
                if all(
                    value_matches(deal.get(c.field), c.operator, c.values) for c in deal_conditions
                )
            ),
            None,
        )
        for condition in deal_conditions:
            values = [_as_strings(deal.get(condition.field)) for deal in deals]
            holds = matching is not None
            detail = (
                f"deal {matching.get('id')} matches"
                if matching
                else f"open deals' values: {values}"
            )
            outcome.results.append(ConditionResult(condition.describe(), holds, detail))
        outcome.matched &= matching is not None
        outcome.deal = matching
    return outcome


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    conditions: tuple[Condition, ...]
    target: str  # responsible | user | round_robin | queue
    user_ids: tuple[int, ...] = ()
    broken: bool = False
    broken_reason: str = ""


@dataclass
class RouteDecision:
    user_id: int | None
    rule: str
    rule_id: int | None = None
    explanation: list[dict[str, Any]] = field(default_factory=list)


def route_decide(
    *,
    facts: RoutingFacts,
    rules: Sequence[Rule],
    others_user_id: int | None,
    responsible_first: bool,
    is_available: Callable[[int], bool],
    round_robin_pick: Callable[[Rule, list[int]], int | None],
) -> RouteDecision:
    """The user an incoming call goes to, and why.

    Order: the caller's responsible user (when the tenant routes identified callers to them and
    they are available), then the enabled, unbroken rules in order (the first that matches
    decides), then "Others". A matched rule whose target is unavailable falls through to the
    next member of its queue, then to "Others".
    """
    explanation: list[dict[str, Any]] = []
    responsible = facts.get("responsible_id")
    if responsible_first and responsible:
        responsible_available = is_available(int(responsible))
        explanation.append(
            {"step": RESPONSIBLE_RULE, "user_id": responsible, "available": responsible_available}
        )
        if responsible_available:
            return RouteDecision(int(responsible), RESPONSIBLE_RULE, None, explanation)
    elif responsible_first:
        explanation.append(
            {"step": RESPONSIBLE_RULE, "skipped": gettext_noop("no responsible user known")}
        )
    for rule in rules:
        if rule.broken:
            skipped = {"rule": rule.name, "skipped": gettext_noop("broken: refers to removed data")}
            if rule.broken_reason:
                skipped["reason"] = rule.broken_reason
            explanation.append(skipped)
            continue
        outcome = rule_evaluate(rule.conditions, facts)
        step: dict[str, Any] = {
            "rule": rule.name,
            "matched": outcome.matched,
            "conditions": [vars(result) for result in outcome.results],
        }
        explanation.append(step)
        if not outcome.matched:
            continue
        candidates = _rule_candidates(rule, facts, outcome)
        available = [user for user in candidates if is_available(user)]
        step["candidates"] = candidates
        step["available"] = available
        if rule.target == TARGET_ROUND_ROBIN:
            chosen = round_robin_pick(rule, available) if available else None
        else:
            chosen = available[0] if available else None
        if chosen is not None:
            step["chosen"] = chosen
            return RouteDecision(chosen, rule.name, rule.id, explanation)
        # The rule applies but nobody of it can take the call: "Others", not the next rule
        # (a caller in negotiation must not end up with whoever a later rule names).
        step["fell_through"] = "no available target"
        break
    explanation.append({"step": OTHERS_RULE, "user_id": others_user_id})
    return RouteDecision(others_user_id, OTHERS_RULE, None, explanation)


def _rule_candidates(rule: Rule, facts: RoutingFacts, outcome: RuleOutcome) -> list[int]:
    if rule.target == TARGET_RESPONSIBLE:
        if outcome.deal is not None and outcome.deal.get("responsible"):
            return [int(outcome.deal["responsible"])]
        responsible = facts.get("responsible_id")
        return [int(responsible)] if responsible else []
    return list(rule.user_ids)
