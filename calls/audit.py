"""The call page for support staff: everything that happened to one call, in order."""

from __future__ import annotations

import logging
from typing import Any, cast

from calls.models import Call, CallRecording
from crm.models import RequestLog
from scenarios.models import ActionRun
from scenarios.routing.rules import Route
from scenarios.routing.selectors import route_explain

logger = logging.getLogger(__name__)


def call_audit_trail(*, call: Call) -> dict[str, Any]:
    """Everything support staff need on one call's page, in the order things happened."""

    try:
        recording: CallRecording | None = call.recording
    except CallRecording.DoesNotExist:
        recording = None
    route = cast(Route, call.route or {})
    return {
        "route": route,
        "route_rows": route_explain(route),
        "events": list(call.events.order_by("received_at", "pk")),
        "transitions": list(call.transitions.select_related("event").order_by("at", "pk")),
        "runs": list(ActionRun.objects.filter(call=call).order_by("pk")),
        "requests": list(RequestLog.objects.filter(call_id=call.pk).order_by("created_at", "pk")),
        "notes": list(call.notes.order_by("created_at", "pk")),
        "recording": recording,
    }
