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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


def _entity_value(condition: Condition, facts: dict[str, Any]) -> Any:
    if condition.source == SOURCE_ENTITY_TYPE:
        return facts.get("entity_type") or ""
    return (facts.get("entity") or {}).get(condition.field)


def rule_evaluate(conditions: Sequence[Condition], facts: dict[str, Any]) -> RuleOutcome:
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


@dataclass
class RouteDecision:
    user_id: int | None
    rule: str
    rule_id: int | None = None
    explanation: list[dict[str, Any]] = field(default_factory=list)


TARGET_RESPONSIBLE = "responsible"
TARGET_USER = "user"
TARGET_ROUND_ROBIN = "round_robin"
TARGET_QUEUE = "queue"
RESPONSIBLE_RULE = "Responsible user"
OTHERS_RULE = "Others"


def route_decide(
    *,
    facts: dict[str, Any],
    rules: Sequence[Rule],
    others_user_id: int | None,
    responsible_first: bool,
    is_available: Callable[[int], bool],
    round_robin_pick: Callable[[Rule, list[int]], int | None],
) -> RouteDecision:
    """The user an incoming call goes to, and why.

    Order: the caller's responsible user (when the tenant routes identified callers to them and
    they are available), then the enabled, unbroken rules in order, then "Others". A rule whose
    target is unavailable falls through to the next member of its queue, then to "Others".
    """
    explanation: list[dict[str, Any]] = []
    responsible = facts.get("responsible_id")
    if responsible_first and responsible:
        available = is_available(int(responsible))
        explanation.append(
            {"step": RESPONSIBLE_RULE, "user_id": responsible, "available": available}
        )
        if available:
            return RouteDecision(int(responsible), RESPONSIBLE_RULE, None, explanation)
    for rule in rules:
        if rule.broken:
            explanation.append({"rule": rule.name, "skipped": "broken: refers to removed data"})
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
            return RouteDecision(chosen, rule.name, rule.id, explanation)
        step["fell_through"] = "no available target"
    return RouteDecision(others_user_id, OTHERS_RULE, None, explanation)


def _rule_candidates(rule: Rule, facts: dict[str, Any], outcome: RuleOutcome) -> list[int]:
    if rule.target == TARGET_RESPONSIBLE:
        if outcome.deal is not None and outcome.deal.get("responsible"):
            return [int(outcome.deal["responsible"])]
        responsible = facts.get("responsible_id")
        return [int(responsible)] if responsible else []
    return list(rule.user_ids)
