"""The pure rule evaluation of issue 6: operators, deals, order, fall-through (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from crm.domain import RoutingFacts
from scenarios.routing.rules import (
    Condition,
    RouteDecision,
    Rule,
    route_decide,
    rule_evaluate,
    value_matches,
)

FACTS: RoutingFacts = {
    "entity_type": "contact",
    "entity": {
        "responsible": "5",
        "type": "CLIENT",
        "source": "WEB",
        "UF_CRM_REGION": "North-West",
        "UF_CRM_TAGS": ["vip", "legal"],
        "UF_CRM_NOTE": "",
    },
    "responsible_id": 5,
    "deals": [
        {"id": 70, "pipeline": "0", "stage": "PREPARATION", "responsible": "7"},
        {"id": 71, "pipeline": "1", "stage": "C1:NEGOTIATION", "responsible": "9"},
    ],
}


@pytest.mark.parametrize(
    ("value", "operator", "wanted", "expected"),
    [
        ("CLIENT", "equals", ["CLIENT"], True),
        ("CLIENT", "equals", ["client"], True),
        ("CLIENT", "equals", ["PARTNER", "CLIENT"], True),
        ("CLIENT", "equals", ["PARTNER"], False),
        ("CLIENT", "not_equals", ["PARTNER"], True),
        ("CLIENT", "not_equals", ["CLIENT"], False),
        ("North-West", "contains", ["north"], True),
        ("North-West", "contains", ["north", "west"], True),
        ("North-West", "contains", ["north", "east"], False),
        ("North-West", "not_contains", ["east"], True),
        ("North-West", "not_contains", ["west"], False),
        (["vip", "legal"], "contains", ["vip"], True),
        (["vip", "legal"], "contains", ["vip", "legal"], True),
        (["vip", "legal"], "contains", ["vip", "retail"], False),
        (["vip", "legal"], "equals", ["legal"], True),
        (["vip", "legal"], "not_contains", ["retail"], True),
        ("", "empty", [], True),
        (None, "empty", [], True),
        ([], "empty", [], True),
        ("   ", "empty", [], True),
        ("x", "empty", [], False),
        ("", "not_empty", [], False),
        (["a"], "not_empty", [], True),
        (None, "equals", ["x"], False),
        (None, "not_equals", ["x"], True),
        (5, "equals", ["5"], True),
    ],
)
def test_operators(value: Any, operator: str, wanted: list[str], expected: bool) -> None:
    assert value_matches(value, operator, wanted) is expected


def test_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown operator"):
        value_matches("x", "looks_like", ["x"])


def test_all_deal_conditions_must_hold_for_the_same_open_deal() -> None:
    same_deal = [
        Condition("deal", "pipeline", "equals", ("1",)),
        Condition("deal", "stage", "equals", ("C1:NEGOTIATION",)),
    ]
    outcome = rule_evaluate(same_deal, FACTS)
    assert outcome.matched
    assert outcome.deal is not None
    assert outcome.deal["id"] == 71

    across_deals = [
        Condition("deal", "pipeline", "equals", ("0",)),
        Condition("deal", "stage", "equals", ("C1:NEGOTIATION",)),
    ]
    assert not rule_evaluate(across_deals, FACTS).matched


def test_deal_condition_without_open_deals_does_not_hold() -> None:
    facts: RoutingFacts = {**FACTS, "deals": []}
    outcome = rule_evaluate([Condition("deal", "stage", "not_equals", ("WON",))], facts)
    assert not outcome.matched
    assert outcome.results[0].holds is False


def test_entity_type_condition() -> None:
    assert rule_evaluate([Condition("entity_type", "", "equals", ("contact",))], FACTS).matched
    unknown: RoutingFacts = {"entity_type": "", "entity": {}, "responsible_id": None, "deals": []}
    assert rule_evaluate([Condition("entity_type", "", "empty")], unknown).matched


def _decide(rules: list[Rule], facts: RoutingFacts = FACTS, **kwargs: Any) -> RouteDecision:
    options: dict[str, Any] = {
        "others_user_id": 1,
        "responsible_first": False,
        "is_available": lambda user: True,
        "round_robin_pick": lambda rule, users: users[0],
    }
    options.update(kwargs)
    return route_decide(facts=facts, rules=rules, **options)


LEGAL = Rule(
    1, "Contracts in negotiation -> Legal",
    (Condition("deal", "stage", "equals", ("C1:NEGOTIATION",)),), "user", (9,),
)  # fmt: skip
VIP = Rule(2, "VIP", (Condition("entity", "UF_CRM_TAGS", "contains", ("vip",)),), "user", (3,))


def test_rules_apply_in_order() -> None:
    assert _decide([LEGAL, VIP]).rule == LEGAL.name
    assert _decide([VIP, LEGAL]).rule == "VIP"


def test_others_for_a_caller_that_matches_no_rule() -> None:
    unknown: RoutingFacts = {"entity_type": "", "entity": {}, "responsible_id": None, "deals": []}
    decision = _decide([LEGAL, VIP], facts=unknown, others_user_id=42)
    assert (decision.user_id, decision.rule) == (42, "Others")


def test_responsible_first_wins_over_rules_when_available() -> None:
    decision = _decide([LEGAL], responsible_first=True)
    assert (decision.user_id, decision.rule) == (5, "Responsible user")
    busy = _decide([LEGAL], responsible_first=True, is_available=lambda user: user != 5)
    assert (busy.user_id, busy.rule) == (9, LEGAL.name)


def test_responsible_of_the_matched_deal_is_the_target() -> None:
    rule = Rule(3, "Deal owner", LEGAL.conditions, "responsible")
    assert _decide([rule]).user_id == 9
    entity_rule = Rule(
        4, "Owner", (Condition("entity", "type", "equals", ("CLIENT",)),), "responsible"
    )
    assert _decide([entity_rule]).user_id == 5


def test_unavailable_target_falls_through_queue_then_to_others() -> None:
    queue = Rule(5, "Queue", LEGAL.conditions, "queue", (9, 7, 3))
    assert _decide([queue], is_available=lambda user: user not in (9,)).user_id == 7
    assert _decide([queue], is_available=lambda user: user == 3).user_id == 3
    nobody = _decide([queue], is_available=lambda user: user == 1)
    assert (nobody.user_id, nobody.rule) == (1, "Others")
    assert nobody.explanation[-2]["fell_through"] == "no available target"
    assert nobody.explanation[-1] == {"step": "Others", "user_id": 1}


def test_broken_rule_is_skipped_not_half_applied() -> None:
    broken = Rule(6, "Broken", LEGAL.conditions, "user", (9,), broken=True)
    decision = _decide([broken, VIP])
    assert decision.rule == "VIP"
    assert decision.explanation[0] == {
        "rule": "Broken",
        "skipped": "broken: refers to removed data",
    }


def test_round_robin_picks_among_available_members_only() -> None:
    seen: list[list[int]] = []

    def pick(rule: Rule, users: list[int]) -> int:
        seen.append(users)
        return users[-1]

    pool = Rule(7, "Pool", LEGAL.conditions, "round_robin", (2, 3, 4))
    decision = _decide([pool], is_available=lambda user: user != 3, round_robin_pick=pick)
    assert seen == [[2, 4]]
    assert decision.user_id == 4


def test_explanation_records_each_condition_result() -> None:
    decision = _decide([VIP, LEGAL])
    first = decision.explanation[0]
    assert first["rule"] == "VIP"
    assert first["matched"] is True
    assert first["conditions"][0]["holds"] is True
    assert "vip" in first["conditions"][0]["detail"]
