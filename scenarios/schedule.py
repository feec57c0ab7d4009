"""The dispatcher: durable work costs what is due, not how many tenants exist.

Beat sends `scenarios.dispatch_due` once a second, in the public schema (never once per
tenant). A pass reads the public OutboxWake index for tenants whose outbox needs attention by
now + LOOKAHEAD — with nothing due, a thousand tenants cost one indexed query — and visits each.
A visit, in the tenant's schema:

1. deletes the tenant's wakes that are due (only committed ones: a wake written by a
   transaction still in flight is invisible to the delete, so it stays, and so does its run);
2. `runs_dispatch`: sends what is due (what falls due within the lookahead with that ETA),
   re-sends what was sent and never started, takes back runs of dead workers;
3. reads the tenant's next need from its runs and writes a wake for it, and its late count.

Step 3 reads after step 1 deleted, so a run committed before the delete is seen in step 3, and
one committed after it kept its own wake: nothing is lost between the two. Every pass records a
heartbeat in Redis (readyz, outbox_status). A sweep every hour wakes every tenant once,
so work that predates the index (an upgrade, a restored backup) is found too.

Periodic per-tenant jobs are queued from public the same way (tenants.fanout): for every active
tenant, or, for the work-day refresh, only those that route by it (TenantSchedule).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db.models import Case, Count, DateTimeField, F, Min, Q, Sum, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from scenarios.models import ActionRun
from scenarios.monitoring import outbox_counts_all
from scenarios.outbox import late_filter, lease, outbox_wake, redispatch_after, runs_dispatch
from tenants.fanout import schedule_flag_set, scheduled_schemas
from tenants.models import OutboxWake, Tenant, TenantSchedule
from tenants.wake import visit_hooks_run

logger = logging.getLogger(__name__)

# A pass looks this far ahead: what falls due before the next pass is sent now, with its ETA.
LOOKAHEAD = timedelta(seconds=1.5)
VISITS_PER_PASS = 200
# A visit that failed (the database hiccupped, a schema is broken) is tried again this soon.
VISIT_RETRY = timedelta(seconds=10)
_DISPATCH_LOCK = "outbox:dispatch:pass"
_HEARTBEAT = "outbox:dispatch:heartbeat"

Status = ActionRun.Status


@dataclass(frozen=True)
class OutboxState:
    """One tenant's outbox as the dispatcher reads it."""

    next_at: datetime | None  # when it next needs the dispatcher (None: nothing to watch)
    due: int  # scheduled and due, not started
    late: int  # of those, due for longer than LATE_AFTER
    oldest_due_at: datetime | None


def outbox_state(*, now: datetime) -> OutboxState:
    """The current tenant's outbox: its next need and what is due (one query)."""
    attention = Case(
        # Due (or, once sent, due again when its message may be lost).
        When(
            status=Status.SCHEDULED,
            due_at__isnull=False,
            then=Greatest("due_at", Coalesce(F("dispatched_at") + redispatch_after(), "due_at")),
        ),
        # Taken back when its worker may have died.
        When(status=Status.RUNNING, then=F("claimed_at") + lease()),
        output_field=DateTimeField(),
    )
    due = Q(status=Status.SCHEDULED, due_at__lte=now)
    row = ActionRun.objects.filter(status__in=[Status.SCHEDULED, Status.RUNNING]).aggregate(
        next_at=Min(attention),
        due=Count("pk", filter=due),
        late=Count("pk", filter=late_filter(now)),
        oldest_due_at=Min("due_at", filter=due),
    )
    return OutboxState(**row)


def _visit(*, tenant_id: int, schema: str, horizon: datetime) -> int:
    with schema_context(schema):
        OutboxWake.objects.filter(tenant_id=tenant_id, at__lte=horizon).delete()
        try:
            now = timezone.now()
            sent = runs_dispatch(lookahead=horizon - now)
            hooks_next_at = visit_hooks_run(now)
            state = outbox_state(now=timezone.now())
        except Exception:
            logger.exception("outbox of %s not dispatched; trying again shortly", schema)
            outbox_wake(at=timezone.now() + VISIT_RETRY)
            return 0
        next_at = min((at for at in (state.next_at, hooks_next_at) if at is not None), default=None)
        if (
            next_at is not None
            and not OutboxWake.objects.filter(tenant_id=tenant_id, at__lte=next_at).exists()
        ):
            outbox_wake(at=next_at)
        facts = {
            "outbox_visited_at": now,
            "outbox_late": state.late,
            "outbox_oldest_due_at": state.oldest_due_at,
        }
        if not TenantSchedule.objects.filter(tenant_id=tenant_id).update(**facts):
            TenantSchedule.objects.create(tenant_id=tenant_id, **facts)
    return sent


def outbox_dispatch(*, limit: int = VISITS_PER_PASS) -> int | None:
    """One pass over the tenants with due work; how many runs it sent (None: another pass was
    under way)."""
    shared = caches["shared"]
    if not shared.add(_DISPATCH_LOCK, 1, timeout=10):
        return None
    try:
        horizon = timezone.now() + LOOKAHEAD
        due = (
            OutboxWake.objects.filter(at__lte=horizon)
            .values("tenant_id", "tenant__schema_name")
            .annotate(first=Min("at"))
            .order_by("first")[:limit]
        )
        sent = sum(
            _visit(tenant_id=row["tenant_id"], schema=row["tenant__schema_name"], horizon=horizon)
            for row in list(due)
        )
        shared.set(_HEARTBEAT, time.time(), timeout=None)
        return sent
    finally:
        shared.delete(_DISPATCH_LOCK)


def outbox_sweep() -> int:
    """Every tenant's outbox is looked at in the next passes, due or not; how many tenants."""
    now = timezone.now()
    tenants = Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list(
        "pk", flat=True
    )
    return len(OutboxWake.objects.bulk_create([OutboxWake(tenant_id=pk, at=now) for pk in tenants]))


def dispatcher_heartbeat() -> dict[str, Any]:
    """When the dispatcher last finished a pass, and how long ago (None: never, or Redis lost)."""
    last = caches["shared"].get(_HEARTBEAT)
    if last is None:
        return {"last_pass_at": None, "age_seconds": None, "stale": True}
    age = max(time.time() - float(last), 0.0)
    return {
        "last_pass_at": datetime.fromtimestamp(float(last), tz=UTC).isoformat(),
        "age_seconds": round(age, 3),
        "stale": age > settings.SIMTRIX_DISPATCHER_STALE_SECONDS,
    }


def outbox_late_overall() -> dict[str, Any]:
    """Late runs across tenants, as their last visits saw them (one public query)."""
    row = TenantSchedule.objects.filter(outbox_late__gt=0).aggregate(
        late=Sum("outbox_late"), oldest_due_at=Min("outbox_oldest_due_at")
    )
    oldest = row["oldest_due_at"]
    return {
        "late": row["late"] or 0,
        "oldest_late_seconds": round((timezone.now() - oldest).total_seconds()) if oldest else None,
    }


def outbox_status_all() -> dict[str, Any]:
    """Per tenant: due, late and failed runs and the oldest due age (what /metrics reads too)."""
    tenants = {
        row["schema"]: {
            "due": row["due"],
            "late": row["late"],
            "failed": row["failed"],
            "oldest_due_age_seconds": row["oldest_due_seconds"],
        }
        for row in outbox_counts_all()
    }
    return {"dispatcher": dispatcher_heartbeat(), "tenants": tenants}


# --- Periodic per-tenant jobs -------------------------------------------------------------


def availability_schemas() -> list[str]:
    """The active tenants that route by the Bitrix24 work-day status."""
    return scheduled_schemas("availability_refresh")


def schedule_on_routing_settings_saved(*, instance: Any, **kwargs: Any) -> None:
    """Whether the tenant wants the minute refresh is kept in public, where beat can read it."""
    schedule_flag_set(availability_refresh=instance.use_timeman)
