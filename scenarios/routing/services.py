"""Routing's decisions and writes: who takes a call, whose turn it is in a round-robin, and the
upkeep of rules and settings (checks against the directory, order, availability)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, cast

from django.db import transaction
from django.utils import timezone, translation

from calls.lifecycle import RESOLVED
from calls.models import Call
from crm.domain import CrmObject, RoutingFacts
from crm.errors import Bitrix24Error
from crm.mapping import routing_facts
from crm.selectors import crm_find_by_phone
from crm.services import directory_timeman_refresh
from scenarios.models import RoundRobinCursor, RoutingCondition, RoutingRule, RoutingSettings
from scenarios.routing.rules import OTHERS_RULE, Route, RoutePerson, Rule, route_decide
from scenarios.routing.selectors import (
    ROUTING_SETTINGS_MEMO,
    routing_directory,
    routing_rule_problems,
    routing_rules,
    routing_settings_get,
    user_unavailable_reason,
)
from tenants.memo import tenant_memo_forget

logger = logging.getLogger(__name__)


def route_for_outcome(call: Call) -> Route:
    """The route the call's actions follow (see route_effective)."""
    route = cast(Route, call.route or {})  # a JSONField: what route_decide_call stored
    return route_effective(
        route=route,
        direction=call.direction,
        ended=call.status == Call.Status.ENDED,
        outcome=call.outcome,
    )


def route_effective(*, route: Route, direction: str, ended: bool, outcome: str) -> Route:
    """For a missed incoming call, per the tenant's setting, the next member of the queue takes
    the routed user's place (they did not answer); otherwise the route as decided."""
    route = route.copy()
    unanswered = ended and outcome not in ("", Call.Outcome.ANSWERED, Call.Outcome.REJECTED)
    following = route.get("next")
    if (
        direction == Call.Direction.INCOMING
        and unanswered
        and following
        and routing_settings_get().missed_to == RoutingSettings.MissedTo.NEXT
    ):
        route.update(
            {"user": following["user"], "rule": following["rule"], "missed_by": route.get("user")}
        )
    return route


def round_robin_pick(*, key: str, candidates: list[int], peek: bool = False) -> int | None:
    """The next user of the set after the one who got the last assignment.

    The cursor row is locked while choosing, so concurrent calls take turns instead of getting
    the same user; inactive users must already be filtered out of `candidates`.
    """
    ordered = sorted(set(candidates))
    if not ordered:
        return None
    if peek:
        cursor = RoundRobinCursor.objects.filter(key=key).first()
        last = cursor.last_user_id if cursor else None
        return next((user for user in ordered if last is not None and user > last), ordered[0])
    with transaction.atomic():
        RoundRobinCursor.objects.get_or_create(key=key)
        cursor = RoundRobinCursor.objects.select_for_update().get(key=key)
        last = cursor.last_user_id
        chosen = next((user for user in ordered if last is not None and user > last), ordered[0])
        cursor.last_user_id = chosen
        cursor.assignments += 1
        cursor.save(update_fields=["last_user_id", "assignments", "updated_at"])
    return chosen


OUTGOING_RULE = None  # an outgoing call is not routed: the agent who dials it takes it


def route_decide_call(
    *,
    facts: RoutingFacts | None,
    crm_status: str,
    direction: str,
    agent_id: int,
    peek: bool = False,
) -> Route:
    """Who should take a call, and why: the route stored on the call.

    `facts` are the caller's routing facts (crm.mapping.routing_facts). Without them in time
    (the lookup is pending or Bitrix24 is unavailable) the call goes to "Others" and the route
    is provisional: it is decided again once the background lookup knows the caller. `peek`
    (the bridge's lookup, the admin's test box) shows the decision without taking a
    round-robin turn. The bridge sees `user` and `rule` (calls.selectors.route_public); the
    rest is the audit trail: `explanation` (every step and condition), `next` (the user the
    call would go to if the routed user cannot take it), `unavailable` (who was passed over).
    """
    known = routing_directory(with_fields=False)
    settings = routing_settings_get()
    unavailable: dict[str, str] = {}

    def available(user_id: int) -> bool:
        reason = user_unavailable_reason(user_id, known=known, settings=settings)
        if reason:
            unavailable[str(user_id)] = reason
        return reason is None

    def person(user_id: int) -> RoutePerson:
        return {"id": user_id, "name": known.user_name(user_id)}

    others, others_note = _others_user(settings=settings, agent_id=agent_id, available=available)
    route: Route = {
        "crm_status": crm_status,
        "decided_at": timezone.now().isoformat(),
        "provisional": False,
    }
    if direction != Call.Direction.INCOMING:
        return {
            **route,
            "user": person(agent_id),
            "rule": OUTGOING_RULE,
            "provisional": not direction,
            "explanation": [
                {"step": "Not routed", "detail": f"{direction or 'unknown'} direction: the agent"}
            ],
        }
    if facts is None or crm_status not in RESOLVED:
        return {
            **route,
            "user": person(others),
            "rule": OTHERS_RULE,
            "provisional": True,
            "next": None,
            "explanation": [
                {
                    "step": "CRM data",
                    "detail": f"not known in time ({crm_status or 'no lookup'}): "
                    "routed to Others, decided again once the caller is known",
                },
                {"step": OTHERS_RULE, "user_id": others, **others_note},
            ],
        }
    rules = routing_rules()

    def pick(peeking: bool) -> Any:
        def choose(rule: Rule, users: list[int]) -> int | None:
            return round_robin_pick(key=f"route:{rule.id}", candidates=users, peek=peeking)

        return choose

    decision = route_decide(
        facts=facts,
        rules=rules,
        others_user_id=others,
        responsible_first=settings.responsible_first,
        is_available=available,
        round_robin_pick=pick(peek),
    )
    if decision.rule == OTHERS_RULE and others_note:
        decision.explanation[-1].update(others_note)
    # Who takes it when the routed user cannot: the same decision without them.
    chosen = decision.user_id
    fallback = route_decide(
        facts=facts,
        rules=rules,
        others_user_id=others,
        responsible_first=settings.responsible_first,
        is_available=lambda user: user != chosen and available(user),
        round_robin_pick=pick(True),
    )
    next_user = fallback.user_id if fallback.user_id not in (None, chosen) else None
    return {
        **route,
        "user": person(chosen or agent_id),
        "rule": decision.rule,
        "rule_id": decision.rule_id,
        "next": (
            {"user": person(next_user), "rule": fallback.rule} if next_user is not None else None
        ),
        "unavailable": unavailable,
        "explanation": decision.explanation,
    }


def _others_user(
    *, settings: RoutingSettings, agent_id: int, available: Any
) -> tuple[int, dict[str, Any]]:
    """The "Others" user: the device's agent, or the tenant's fixed user when available."""
    fixed = settings.others_user_id
    if settings.others_target == RoutingSettings.OthersTarget.USER and fixed:
        if available(fixed):
            return fixed, {}
        return agent_id, {"detail": f"the Others user {fixed} is unavailable: the device's agent"}
    return agent_id, {}


def route_rule_explanation(route: Route) -> str:
    """One line for the audit trail: who, by which rule."""
    user: Mapping[str, object] = route.get("user") or {}
    who = f"{user.get('name') or 'user'} ({user.get('id')})"
    rule = route.get("rule") or "not routed"
    return f"Routed to {who} by {rule!r}" + (" (provisional)" if route.get("provisional") else "")


def routing_rules_check(*, rule_ids: list[int] | None = None) -> int:
    """Marks rules and conditions broken (or fixed) against the synced Bitrix24 directory.

    Runs after every directory sync (crm.signals.directory_synced) and when a rule is saved.
    A broken rule is skipped by routing until what it names exists again. Returns how many of
    the checked rules are broken.
    """
    known = routing_directory()
    now = timezone.now()
    rules = RoutingRule.objects.prefetch_related("conditions")
    if rule_ids is not None:
        rules = rules.filter(pk__in=rule_ids)
    broken = 0
    # The reasons are stored and compared with what is stored: in English, whatever language the
    # admin who saves a rule (or the worker that syncs) speaks.
    with transaction.atomic(), translation.override("en"):
        for rule in rules:
            by_condition, target = routing_rule_problems(rule, known=known)
            reasons = []
            for condition in rule.conditions.all():
                reason = by_condition.get(condition.pk, "")
                if condition.broken_reason != reason:
                    RoutingCondition.objects.filter(pk=condition.pk).update(broken_reason=reason)
                if reason:
                    reasons.append(f"condition '{condition}': {reason}")
            reasons += [f"target: {problem}" for problem in target]
            RoutingRule.objects.filter(pk=rule.pk).update(
                broken_reason="; ".join(reasons), checked_at=now
            )
            broken += bool(reasons)
    return broken


def routing_on_directory_synced(**kwargs: Any) -> None:
    routing_rules_check()


def routing_settings_forget(**kwargs: Any) -> None:
    """The routing settings changed: this process reads them again (others within seconds)."""
    tenant_memo_forget(ROUTING_SETTINGS_MEMO)


def routing_rule_move(*, rule_id: int, step: int) -> bool:
    """Moves a rule `step` places (-1 up, +1 down); positions are renumbered 10, 20, ..."""
    with transaction.atomic():
        rules = list(RoutingRule.objects.select_for_update().order_by("position", "pk"))
        index = next((i for i, rule in enumerate(rules) if rule.pk == rule_id), None)
        if index is None or not 0 <= index + step < len(rules):
            return False
        rules.insert(index + step, rules.pop(index))
        for position, rule in enumerate(rules, start=1):
            if rule.position != position * 10:
                RoutingRule.objects.filter(pk=rule.pk).update(position=position * 10)
    return True


def routing_settings_ensure() -> RoutingSettings:
    settings, _ = RoutingSettings.objects.get_or_create(singleton=1)
    return settings


def routing_availability_refresh() -> int:
    """Refreshes users' work-day status (TIMEMAN_STATUS) when the tenant routes by it.

    Every minute (beat); one request per 50 active users. A portal that refuses (no timeman
    scope, not connected) leaves statuses unknown, which routing treats as available.
    """

    if not routing_settings_get().use_timeman:
        return 0
    try:
        return len(directory_timeman_refresh())
    except Bitrix24Error as exc:
        logger.info("Work-day statuses not refreshed: %s", exc)
        return 0


def route_preview(*, phone: str, agent_id: int) -> dict[str, Any]:
    """What routing would do for an incoming call from `phone` now (the admin's test box).

    A fresh lookup (no budget, not from the cache) and a decision that takes no round-robin
    turn: nothing is created or assigned. Raises crm's InvalidPhoneNumber for non-numbers.
    """

    crm: CrmObject
    facts: RoutingFacts | None
    try:
        lookup = crm_find_by_phone(phone=phone, budget_s=math.inf, use_cache=False)
    except Bitrix24Error as exc:  # refused (e.g. scopes): shown, and routed as the bridge would
        crm, status, error, facts = {"status": "unavailable"}, "unavailable", str(exc), None
    else:
        crm, status, error = lookup.as_api(), lookup.status, lookup.error
        phone = lookup.phone_e164
        facts = routing_facts(lookup) if lookup.status in RESOLVED else None
    route = route_decide_call(
        facts=facts,
        crm_status=status,
        direction=Call.Direction.INCOMING,
        agent_id=agent_id,
        peek=True,
    )
    return {"phone": phone, "crm": crm, "error": error, "facts": facts, "route": route}
