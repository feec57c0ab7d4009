"""The call page for support staff: everything that happened to one call, in order."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from django.utils import timezone
from django.utils.translation import gettext as _

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
        return {"kind": "open", "text": _("In progress: the phone has not reported the end yet.")}
    if not log_runs:
        text = _("Not logged in Bitrix24: no scenario action logs this call.")
        return {"kind": "open", "text": text}
    return _run_line(log_runs[-1])


def _logged_line(call: Call) -> dict[str, Any]:
    if call.b24_log_mode == Call.LogMode.ACTIVITY:
        how = _("as CRM activity #%(id)s") % {"id": call.b24_activity_id}
    else:
        how = _("as a telephony call (%(id)s)") % {"id": call.b24_call_id}
        if call.b24_activity_id:
            how += _(", activity #%(id)s") % {"id": call.b24_activity_id}
    text = _("Logged in Bitrix24 at %(time)s %(how)s.") % {
        "time": _hhmm(call.b24_finished_at),
        "how": how,
    }
    return {"kind": "logged", "text": text}


def _run_line(run: ActionRun) -> dict[str, Any]:
    if run.status == ActionRun.Status.FAILED:
        reason = run.last_error or _("no reason given")
        return {
            "kind": "failed",
            "text": _("Not logged in Bitrix24: failed: %(reason)s") % {"reason": reason},
            "retry_run": run,
        }
    if run.status == ActionRun.Status.SKIPPED:
        text = _("Not logged in Bitrix24: skipped: %(reason)s") % {"reason": run.last_error}
        return {"kind": "open", "text": text}
    if run.attempts:
        values = {
            "attempt": run.attempts + 1,
            "allowed": run_attempts_allowed(),
            "time": _hhmm(run.due_at),
            "error": run.last_error,
        }
        text = (
            _(
                "Waiting for Bitrix24: retry %(attempt)s of %(allowed)s at %(time)s "
                "(last: %(error)s)"
            )
            if run.last_error
            else _("Waiting for Bitrix24: retry %(attempt)s of %(allowed)s at %(time)s.")
        )
        return {"kind": "waiting", "text": text % values}
    text = _("Waiting for Bitrix24: to be logged at %(time)s.") % {"time": _hhmm(run.due_at)}
    return {"kind": "waiting", "text": text}


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
