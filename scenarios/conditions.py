"""An action's conditions on the caller's CRM data: the routing rules' conditions and their
evaluator (scenarios.routing.rules), read as an action stores them (a JSON list of
``{"source", "field", "operator", "values"}``). Pure: the facts are crm.mapping.routing_facts.

All conditions must hold; deal conditions are met by one open deal that satisfies all of them,
the deal the action then works on when it works on "the open deal".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crm.domain import RoutingFacts
from scenarios.routing.rules import Condition, rule_evaluate


def action_conditions(raw: Any) -> tuple[Condition, ...]:
    """An action's stored conditions as the evaluator reads them (validated when saved)."""
    return tuple(
        Condition(
            str(item.get("source") or ""),
            str(item.get("field") or ""),
            str(item.get("operator") or ""),
            tuple(str(value) for value in item.get("values") or []),
        )
        for item in raw or []
        if isinstance(item, dict)
    )


@dataclass(frozen=True)
class ConditionsOutcome:
    holds: bool
    # One row per condition, as the run's result and the simulator show them.
    rows: list[dict[str, Any]] = field(default_factory=list)
    deal_id: int | None = None  # the open deal that met the deal conditions


def conditions_check(raw: Any, facts: RoutingFacts) -> ConditionsOutcome:
    """Whether an action's conditions hold for the caller, and why."""
    outcome = rule_evaluate(action_conditions(raw), facts)
    rows = [
        {"condition": result.condition, "holds": result.holds, "detail": result.detail}
        for result in outcome.results
    ]
    deal = outcome.deal or {}
    deal_id = deal.get("id")
    return ConditionsOutcome(
        holds=outcome.matched, rows=rows, deal_id=int(deal_id) if deal_id else None
    )


def conditions_summary(rows: list[dict[str, Any]]) -> str:
    """The conditions that did not hold, in one line (a skipped run's reason)."""
    return "; ".join(f"{row['condition']} ({row['detail']})" for row in rows if not row["holds"])
