"""The call page for support staff: everything that happened to one call, in order."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from django.utils import timezone

from calls.models import Call, CallRecording
from crm.models import RequestLog
from scenarios.models import ActionRun
from scenarios.outbox import run_attempts_allowed
from scenarios.routing.rules import Route
from scenarios.routing.selectors import route_explain

logger = logging.getLogger(__name__)


def _hhmm(moment: datetime | None) -> str:
    return f"{timezone.localtime(moment):%H:%M}" if moment else ""


def call_status_line(*, call: Call, runs: list[ActionRun]) -> dict[str, Any]:
    """The answer to "what happened to this call?" in one line, for the top of its page:
    `kind` (logged, waiting, failed, open), `text`, and the failed run to retry, if any."""
    if call.b24_finished_at is not None:
        return _logged_line(call)
    log_runs = [run for run in runs if run.action_type == "log_call"]
    if call.status != Call.Status.ENDED:
        return {"kind": "open", "text": "In progress: the phone has not reported the end yet."}
    if not log_runs:
        return {
            "kind": "open",
            "text": "Not logged in Bitrix24: no scenario action logs this call.",
        }
    return _run_line(log_runs[-1])


def _logged_line(call: Call) -> dict[str, Any]:
    if call.b24_log_mode == Call.LogMode.ACTIVITY:
        how = f"as CRM activity #{call.b24_activity_id}"
    else:
        how = f"as a telephony call ({call.b24_call_id})"
        if call.b24_activity_id:
            how += f", activity #{call.b24_activity_id}"
    return {"kind": "logged", "text": f"Logged in Bitrix24 at {_hhmm(call.b24_finished_at)} {how}."}


def _run_line(run: ActionRun) -> dict[str, Any]:
    if run.status == ActionRun.Status.FAILED:
        return {
            "kind": "failed",
            "text": f"Not logged in Bitrix24: failed: {run.last_error or 'no reason given'}",
            "retry_run": run,
        }
    if run.status == ActionRun.Status.SKIPPED:
        return {"kind": "open", "text": f"Not logged in Bitrix24: skipped: {run.last_error}"}
    if run.attempts:
        last = f" (last: {run.last_error})" if run.last_error else "."
        return {
            "kind": "waiting",
            "text": f"Waiting for Bitrix24: retry {run.attempts + 1} of "
            f"{run_attempts_allowed()} at {_hhmm(run.due_at)}{last}",
        }
    return {
        "kind": "waiting",
        "text": f"Waiting for Bitrix24: to be logged at {_hhmm(run.due_at)}.",
    }


def call_audit_trail(*, call: Call) -> dict[str, Any]:
    """Everything support staff need on one call's page, in the order things happened."""

    try:
        recording: CallRecording | None = call.recording
    except CallRecording.DoesNotExist:
        recording = None
    route = cast(Route, call.route or {})
    runs = list(ActionRun.objects.filter(call=call).order_by("pk"))
    return {
        "status": call_status_line(call=call, runs=runs),
        "route": route,
        "route_rows": route_explain(route),
        "events": list(call.events.order_by("received_at", "pk")),
        "transitions": list(call.transitions.select_related("event").order_by("at", "pk")),
        "runs": runs,
        "requests": list(RequestLog.objects.filter(call_id=call.pk).order_by("created_at", "pk")),
        "notes": list(call.notes.order_by("created_at", "pk")),
        "recording": recording,
    }
