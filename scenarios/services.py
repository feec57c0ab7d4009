"""What a call causes in Bitrix24: the planning side of the scenario engine."""

from __future__ import annotations

from django.utils import timezone

from calls.models import Call
from scenarios.outbox import run_plan


def scenario_on_call_event(*, call: Call, event_type: str) -> None:
    """Plans the work a call event causes; runs inside the transaction that recorded the event.

    Baseline lifecycle: the call is registered in Bitrix24 as soon as it is known, and finished
    (which writes the timeline activity) once it has ended.
    """
    now = timezone.now()
    register = run_plan(
        call_id=call.pk,
        action_type="register_call",
        dedupe_key=f"call:{call.pk}:register_call",
        due_at=now,
    )
    if call.status == Call.Status.ENDED:
        run_plan(
            call_id=call.pk,
            action_type="log_call",
            dedupe_key=f"call:{call.pk}:log_call",
            due_at=None,
            after=register,
        )
