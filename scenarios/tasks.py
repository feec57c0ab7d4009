from __future__ import annotations

from celery import shared_task

from scenarios import outbox


@shared_task(name="scenarios.run_action", acks_late=True, ignore_result=True)
def run_action_task(run_id: int) -> str:
    return outbox.run_execute(run_id)


@shared_task(name="scenarios.dispatch_due", ignore_result=True, expires=5)
def dispatch_due_task() -> int:
    return outbox.runs_dispatch()


@shared_task(
    name="scenarios.availability_refresh", ignore_result=True, expires=50, soft_time_limit=45
)
def availability_refresh_task() -> int:
    """Reads the Bitrix24 work-day status of the tenant's users when routing uses it."""
    from scenarios.services import routing_availability_refresh

    return routing_availability_refresh()
