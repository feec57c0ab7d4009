"""What routing reads: the tenant's rules and settings, the directory they are checked against,
who is available, and what a decided route means for the people who read it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext

from crm.directory import DIRECTORY_MEMO
from crm.models import Bitrix24User
from crm.selectors import department_members, directory_departments, directory_entity_fields
from scenarios.models import RoutingRule, RoutingSettings
from scenarios.routing.rules import (
    CALLER_TYPES,
    DEAL_FIELDS,
    ENTITY_FIELDS,
    SOURCE_DEAL,
    SOURCE_ENTITY,
    SOURCE_ENTITY_TYPE,
    STEP_TITLES,
    VALUELESS,
    Condition,
    Route,
    Rule,
)
from scenarios.selectors import Directory, directory
from tenants.memo import tenant_memo

# A work-day status older than this is not trusted (the refresh stopped, e.g. no timeman scope).
TIMEMAN_FRESH_FOR = timedelta(minutes=10)


def routing_directory(*, with_fields: bool = True) -> Directory:
    """`directory()` plus what routing rules are checked against (departments, CRM fields;
    not needed to route a call: `with_fields=False`) and routed by (work-day statuses).

    Without the fields it is read for every call, so memoised in the process for a few
    seconds (tenants.memo); crm forgets it when it syncs the directory or work-day statuses.
    """

    if not with_fields:
        return tenant_memo(DIRECTORY_MEMO, lambda: _routing_directory(with_fields=False))
    return _routing_directory(with_fields=True)


def _routing_directory(*, with_fields: bool) -> Directory:
    known = directory()
    if not known.synced:
        return known
    fresh_since = timezone.now() - TIMEMAN_FRESH_FOR
    timeman = dict(
        Bitrix24User.objects.filter(timeman_checked_at__gte=fresh_since)
        .exclude(timeman_status="")
        .values_list("id", "timeman_status")
    )
    known = replace(known, timeman=timeman)
    if not with_fields:
        return known
    # Every type whose list was ever synced is judged, even if all its fields are gone now.
    fields: dict[str, set[str]] = {}
    for entity_type, name, removed in directory_entity_fields(include_removed=True).values_list(
        "entity_type", "name", "removed"
    ):
        names = fields.setdefault(entity_type, set())
        if not removed:
            names.add(name)
    return replace(
        known,
        departments=frozenset(directory_departments().values_list("id", flat=True)),
        fields={entity_type: frozenset(names) for entity_type, names in fields.items()},
    )


# Work-day statuses that make a user unavailable (TIMEMAN_STATUS; REFERENCE 3.2, 5.7).
TIMEMAN_UNAVAILABLE = frozenset({"CLOSED", "PAUSED", "EXPIRED"})


ROUTING_SETTINGS_MEMO = "scenarios.routing_settings"


def routing_settings_get() -> RoutingSettings:
    """The tenant's routing settings (the defaults when none were saved); read for every call,
    so memoised in the process for a few seconds (tenants.memo)."""
    return tenant_memo(
        ROUTING_SETTINGS_MEMO,
        lambda: RoutingSettings.objects.filter(singleton=1).first() or RoutingSettings(),
    )


def routing_rules(*, known: Directory | None = None) -> list[Rule]:
    """The enabled rules in order, as the evaluator reads them (department members resolved)."""

    rules = []
    for row in RoutingRule.objects.filter(enabled=True).prefetch_related("conditions"):
        users = list(row.users or [])
        if row.target == RoutingRule.Target.ROUND_ROBIN and row.department_id:
            users = department_members(department_id=row.department_id)
        rules.append(
            Rule(
                id=row.pk,
                name=row.name,
                conditions=tuple(c.as_condition() for c in row.conditions.all()),
                target=row.target,
                user_ids=tuple(users),
                broken=row.broken,
                broken_reason=row.broken_reason,
            )
        )
    return rules


def user_unavailable_reason(
    user_id: int, *, known: Directory, settings: RoutingSettings
) -> str | None:
    """Why a user cannot take a call now, or None when they can (or nothing says otherwise)."""
    problem = known.user_problem(user_id)
    if problem:
        return problem
    status = known.timeman.get(user_id, "")
    if settings.use_timeman and status in TIMEMAN_UNAVAILABLE:
        return f"work day {status.lower()}"
    return None


def condition_reference_problem(condition: Condition, *, known: Directory) -> str:
    """What a condition names that Bitrix24 no longer has ("" when all is there)."""
    if not known.synced or condition.source == SOURCE_ENTITY_TYPE:
        return ""
    problems = []
    domain = ENTITY_FIELDS if condition.source == SOURCE_ENTITY else DEAL_FIELDS
    if condition.field not in domain:
        types = CALLER_TYPES if condition.source == SOURCE_ENTITY else ("deal",)
        synced = [t for t in types if t in known.fields]
        # Judged only when crm has read the field lists; any caller type having it is enough.
        if synced and not any(condition.field in known.fields[t] for t in synced):
            problems.append(
                gettext("field %(field)s no longer exists in Bitrix24") % {"field": condition.field}
            )
    values = [] if condition.operator in VALUELESS else list(condition.values)
    if condition.field == "responsible" and condition.field in domain:
        for value in values:
            if not value.isdigit() or int(value) not in known.users:
                problems.append(
                    gettext("user %(user)s no longer exists in Bitrix24") % {"user": value}
                )
    elif condition.source == SOURCE_DEAL and condition.field == "pipeline":
        problems += [
            gettext("pipeline %(pipeline)s no longer exists in Bitrix24") % {"pipeline": value}
            for value in values
            if not value.isdigit() or int(value) not in known.pipelines
        ]
    elif condition.source == SOURCE_DEAL and condition.field == "stage":
        stages = {stage for ids in known.stages.values() for stage in ids}
        problems += [
            gettext("stage %(stage)s no longer exists in Bitrix24") % {"stage": value}
            for value in values
            if value not in stages
        ]
    elif condition.source == SOURCE_ENTITY and condition.field == "status":
        problems += [
            gettext("lead status %(status)s no longer exists in Bitrix24") % {"status": value}
            for value in values
            if value not in known.lead_statuses
        ]
    elif condition.source == SOURCE_ENTITY and condition.field == "source":
        problems += [
            gettext("source %(source)s no longer exists in Bitrix24") % {"source": value}
            for value in values
            if value not in known.lead_sources
        ]
    return "; ".join(problems)


def target_reference_problems(
    *, target: str, users: list[int], department_id: int | None, known: Directory
) -> list[str]:
    """Users or the department a rule's target names that Bitrix24 no longer has.

    An inactive user is not a broken reference: they are unavailable, and the call falls
    through to the next member of the queue (or "Others").
    """
    if not known.synced:
        return []
    problems = [
        gettext("user %(user)s no longer exists in Bitrix24") % {"user": user}
        for user in users
        if user not in known.users
    ]
    if department_id and known.departments and department_id not in known.departments:
        problems.append(
            gettext("department %(department)s no longer exists in Bitrix24")
            % {"department": department_id}
        )
    return problems


def routing_rule_problems(
    rule: RoutingRule, *, known: Directory
) -> tuple[dict[int, str], list[str]]:
    """A saved rule's broken references: by condition id, and of its target."""
    conditions = {
        condition.pk: condition_reference_problem(condition.as_condition(), known=known)
        for condition in rule.conditions.all()
    }
    target = target_reference_problems(
        target=rule.target,
        users=list(rule.users or []),
        department_id=rule.department_id,
        known=known,
    )
    return conditions, target


def route_explain(route: Route) -> list[dict[str, Any]]:
    """A stored route's explanation as rows people read: what was tried, in order, and why it
    did or did not decide (the call page and the rule tester show these)."""
    names = directory().names
    unavailable = route.get("unavailable") or {}

    def who(user_id: Any) -> str:
        if not user_id:
            return gettext("nobody")
        name = names.get(int(user_id), "")
        reason = unavailable.get(str(user_id))
        label = f"{name} ({user_id})" if name else gettext("user %(id)s") % {"id": user_id}
        return f"{label}, {reason}" if reason else label

    def skipped(reason: str) -> str:
        # The engine's own reasons are in the catalog; a rule's broken reason is as stored.
        return gettext("skipped: %(reason)s") % {"reason": gettext(reason) if reason else ""}

    rows = []
    for step in route.get("explanation") or []:
        row: dict[str, Any] = {"title": step_title(step), "conditions": []}
        if "rule" in step and "skipped" in step:
            row["outcome"] = skipped(step.get("reason") or step["skipped"])
            row["kind"] = "broken"
        elif "rule" in step:
            row["conditions"] = step.get("conditions") or []
            if not step.get("matched"):
                row["outcome"], row["kind"] = gettext("does not match"), "no"
            elif "chosen" in step:
                row["outcome"] = gettext("matches: routed to %(who)s") % {
                    "who": who(step["chosen"])
                }
                row["kind"] = "yes"
            else:
                tried = ", ".join(who(user) for user in step.get("candidates") or [])
                row["outcome"] = gettext(
                    "matches, but nobody is available (%(tried)s): to Others"
                ) % {"tried": tried or gettext("nobody")}
                row["kind"] = "fell"
        elif "skipped" in step:
            row["outcome"], row["kind"] = skipped(step["skipped"]), "no"
        elif "available" in step:
            available = step["available"]
            row["outcome"] = (
                gettext("routed to %(who)s") % {"who": who(step["user_id"])}
                if available
                else gettext("not available: %(who)s") % {"who": who(step["user_id"])}
            )
            row["kind"] = "yes" if available else "fell"
        elif "user_id" in step:
            routed = gettext("routed to %(who)s") % {"who": who(step["user_id"])}
            detail = f" ({step['detail']})" if step.get("detail") else ""
            row["outcome"], row["kind"] = f"{routed}{detail}", "yes"
        else:
            row["outcome"], row["kind"] = step.get("detail", ""), "info"
        rows.append(row)
    return rows


def step_title(step: dict[str, Any]) -> str:
    """What a step of a stored explanation is called: the tenant's rule by its name, the
    engine's own steps (the responsible user, "Others", ...) in the active language."""
    if step.get("rule"):
        return str(step["rule"])
    name = step.get("step") or ""
    return str(STEP_TITLES.get(name, name))


def rule_shown(rule: str | None) -> str:
    """A route's rule name as people read it: the engine's "Responsible user" and "Others" in
    the active language, a tenant's rule as it is named."""
    return str(STEP_TITLES.get(rule, rule)) if rule else ""
