"""Reads: who is calling, and the mirrored Bitrix24 directory."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

from django.db.models import QuerySet

from crm import client as b24
from crm.cache import cache_get, cache_set, once_per
from crm.client import Bitrix24Client
from crm.domain import CallerLookup, LookupStatus
from crm.errors import Bitrix24Error, Bitrix24NotConfigured
from crm.lookup import lookup_remote
from crm.models import (
    Bitrix24User,
    Department,
    EntityField,
    LeadSource,
    LeadStatus,
    Pipeline,
    Stage,
)
from crm.phones import InvalidPhoneNumber, lookup_forms, phone_to_e164
from crm.session import Bitrix24Session
from tenants.context import tenant_country
from tenants.fanout import task_queue

logger = logging.getLogger(__name__)

__all__ = ["InvalidPhoneNumber", "crm_find_by_phone", "crm_phone_known"]

# A "not found" is cached for a shorter time: a salesperson may add the caller right away.
NOT_FOUND_TTL = 60
# What makes the answer "pending" (it will come, just not in time) rather than "unavailable".
_SLOW_CODES = frozenset({"TIMEOUT", "RATE_LIMITED", "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"})


def crm_find_by_phone(
    *, phone: str, budget_s: float | None = None, use_cache: bool = True
) -> CallerLookup:
    """The caller behind ``phone``, from the cache or Bitrix24 (one request), within a budget.

    ``budget_s=None`` uses the tenant's lookup budget; ``math.inf`` waits as long as the
    request needs (background work). Past the budget the result is ``pending`` and a Celery
    task finishes the lookup into the cache; a portal that is down or refuses gives
    ``unavailable`` (with ``error`` set). Raises ``InvalidPhoneNumber`` for non-numbers.
    """
    e164 = phone_to_e164(phone, country=tenant_country())
    if use_cache:
        cached = cache_get(e164)
        if cached is not None:
            return CallerLookup.from_cache(cached)

    try:
        session = Bitrix24Session.for_tenant()
    except Bitrix24NotConfigured as exc:
        return CallerLookup(status="unavailable", phone_e164=e164, error=exc.display())
    conn = session.connection
    budget = conn.lookup_budget_ms / 1000 if budget_s is None else budget_s
    deadline = None if math.isinf(budget) else time.monotonic() + budget
    try:
        lookup = lookup_remote(
            Bitrix24Client(session),
            e164=e164,
            forms=lookup_forms(e164, country=tenant_country()),
            deadline=deadline,
        )
    except Bitrix24Error as exc:
        if exc.transient and deadline is not None:
            _refresh_in_background(e164)
        status: LookupStatus = (
            "pending" if exc.transient and exc.code in _SLOW_CODES and deadline else "unavailable"
        )
        logger.info("Lookup of %s: %s (%s)", e164, status, exc)
        return CallerLookup(status=status, phone_e164=e164, error=exc.display())
    ttl = conn.lookup_cache_ttl_s if lookup.found else min(NOT_FOUND_TTL, conn.lookup_cache_ttl_s)
    entities = [(lookup.entity.type, lookup.entity.id)] if lookup.entity else []
    entities += [("deal", d.id) for d in lookup.deals]
    cache_set(e164, lookup.to_cache(), ttl=ttl, entities=entities)
    return lookup


def crm_phone_known(*, phone: str) -> bool:
    """Whether a contact, company or lead has this number in Bitrix24 now: one command (not
    the whole lookup, nor the cache), asked before a lead is made for an unknown caller."""
    e164 = phone_to_e164(phone, country=tenant_country())
    forms = lookup_forms(e164, country=tenant_country())
    return any(Bitrix24Client().run(b24.duplicate_findbycomm(forms)).values())


def _refresh_in_background(e164: str) -> None:
    from crm.tasks import lookup_refresh_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    if once_per(f"lookup-refresh:{e164}", 30):
        task_queue(lookup_refresh_task, e164, what="a lookup refresh")


# ----------------------------------------------------------------------------------------------
# Directory


def directory_users(*, active_only: bool = True) -> QuerySet[Bitrix24User]:
    users = Bitrix24User.objects.filter(removed=False)
    return users.filter(active=True) if active_only else users


def directory_user(*, user_id: int) -> Bitrix24User | None:
    return Bitrix24User.objects.filter(id=user_id).first()


def directory_user_by_phone(*, phone: str) -> Bitrix24User | None:
    """The active user with this phone in their profile (work, mobile or personal)."""
    e164 = phone_to_e164(phone, country=tenant_country())
    for user in directory_users():
        if any(p.get("e164") == e164 for p in user.phones):
            return user
    return None


def directory_departments() -> QuerySet[Department]:
    return Department.objects.filter(removed=False)


def directory_pipelines(*, include_removed: bool = False) -> QuerySet[Pipeline]:
    rows = Pipeline.objects.all()
    return rows if include_removed else rows.filter(removed=False)


def directory_stages(
    *, pipeline_id: int | None = None, include_removed: bool = False
) -> QuerySet[Stage]:
    rows = Stage.objects.select_related("pipeline")
    if pipeline_id is not None:
        rows = rows.filter(pipeline_id=pipeline_id)
    return rows if include_removed else rows.filter(removed=False)


def directory_lead_statuses(*, include_removed: bool = False) -> QuerySet[LeadStatus]:
    rows = LeadStatus.objects.all()
    return rows if include_removed else rows.filter(removed=False)


def directory_lead_sources(*, include_removed: bool = False) -> QuerySet[LeadSource]:
    rows = LeadSource.objects.all()
    return rows if include_removed else rows.filter(removed=False)


def directory_entity_fields(
    *, entity_types: Iterable[str] | None = None, include_removed: bool = False
) -> QuerySet[EntityField]:
    """Fields of contacts, companies, leads and deals as last synced (``crm.*.fields``)."""
    rows = EntityField.objects.all()
    if entity_types is not None:
        rows = rows.filter(entity_type__in=list(entity_types))
    return rows if include_removed else rows.filter(removed=False)


def directory_fields_synced() -> set[str]:
    """The entity types whose field list has been synced at least once."""
    return set(EntityField.objects.values_list("entity_type", flat=True).distinct())


# Choices for settings forms: (value, label).


def user_choices() -> list[tuple[int, str]]:
    return [(u.id, u.name) for u in directory_users()]


def stage_choices() -> list[tuple[str, str]]:
    return [(s.stage_id, f"{s.pipeline.name}: {s.name}") for s in directory_stages()]


def pipeline_choices() -> list[tuple[int, str]]:
    return [(p.id, p.name) for p in directory_pipelines()]


def lead_status_choices() -> list[tuple[str, str]]:
    return [(s.status_id, s.name) for s in directory_lead_statuses()]


def lead_status_first() -> str | None:
    """The first open lead status (the pipeline's entry), if the directory knows any."""
    first = (
        directory_lead_statuses().filter(semantics=Stage.Semantics.PROCESS).order_by("sort").first()
    )
    return first.status_id if first else None


def lead_source_choices() -> list[tuple[str, str]]:
    return [(s.source_id, s.name) for s in directory_lead_sources()]


def department_choices() -> list[tuple[int, str]]:
    return [(d.id, d.name) for d in directory_departments()]


def department_members(*, department_id: int) -> list[int]:
    """Active users of a department (Bitrix24's UF_DEPARTMENT), by id."""
    return sorted(
        user.id for user in directory_users() if department_id in (user.department_ids or [])
    )


def directory_missing(
    *,
    user_ids: Iterable[int] = (),
    stage_ids: Iterable[str] = (),
    pipeline_ids: Iterable[int] = (),
    lead_status_ids: Iterable[str] = (),
    lead_source_ids: Iterable[str] = (),
) -> dict[str, list[int | str]]:
    """Which configured values no longer exist in Bitrix24 (or never did, or left: inactive)."""
    users = set(user_ids)
    stages, pipelines = set(stage_ids), set(pipeline_ids)
    statuses, sources = set(lead_status_ids), set(lead_source_ids)
    missing: dict[str, list[int | str]] = {
        "users": sorted(
            users - set(directory_users().filter(id__in=users).values_list("id", flat=True))
        ),
        "stages": sorted(
            stages
            - set(directory_stages().filter(stage_id__in=stages).values_list("stage_id", flat=True))
        ),
        "pipelines": sorted(
            pipelines
            - set(directory_pipelines().filter(id__in=pipelines).values_list("id", flat=True))
        ),
        "lead_statuses": sorted(
            statuses
            - set(
                directory_lead_statuses()
                .filter(status_id__in=statuses)
                .values_list("status_id", flat=True)
            )
        ),
        "lead_sources": sorted(
            sources
            - set(
                directory_lead_sources()
                .filter(source_id__in=sources)
                .values_list("source_id", flat=True)
            )
        ),
    }
    return {kind: values for kind, values in missing.items() if values}
