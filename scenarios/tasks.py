from __future__ import annotations

from celery import shared_task

from scenarios import lane, schedule
from scenarios.routing.services import routing_availability_refresh
from tenants.fanout import in_tenant_schema, tenants_each


@shared_task(name="scenarios.run_action", acks_late=True, ignore_result=True)
def run_action_task(run_id: int, live: bool = False) -> str:
    return lane.run_or_coalesce(run_id, live=live)


@shared_task(name="scenarios.run_lane", acks_late=True, ignore_result=True)
def run_lane_task() -> int:
    """A tenant's backlog, its Bitrix24 requests sharing batches (scenarios.lane)."""
    if not in_tenant_schema("scenarios.run_lane"):
        return 0
    return lane.lane_drain()


@shared_task(name="scenarios.dispatch_due", ignore_result=True, expires=5)
def dispatch_due_task() -> int | None:
    """Every second, in public: visits the tenants with due work (scenarios.schedule)."""
    return schedule.outbox_dispatch()


@shared_task(name="scenarios.outbox_sweep", ignore_result=True, expires=300)
def outbox_sweep_task() -> int:
    return schedule.outbox_sweep()


@shared_task(
    name="scenarios.availability_refresh", ignore_result=True, expires=50, soft_time_limit=45
)
def availability_refresh_task() -> int:
    """Reads the Bitrix24 work-day status of the tenant's users when routing uses it."""

    if not in_tenant_schema("scenarios.availability_refresh"):
        return 0
    return routing_availability_refresh()


@shared_task(name="scenarios.availability_refresh_all", ignore_result=True, expires=50)
def availability_refresh_all_task() -> int:
    """Every minute, in public: the refresh, queued for the tenants that route by it."""
    return tenants_each(availability_refresh_task, schemas=schedule.availability_schemas())
