"""The call page for support staff: everything that happened to one call, in order."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from calls.models import Call, CallEvent, CallRecording
from calls.selectors import agent_label, agent_names
from crm.models import RequestLog
from crm.services import crm_entity_urls
from scenarios.choices import ActionType
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
    audit = {
        "status": call_status_line(call=call, runs=runs),
        "caller": call_caller(call=call),
        "agent": _agent(call),
        "route": route,
        "route_rows": route_explain(route),
        # A datetime, so the page shows it on the tenant's clock (the route keeps ISO 8601 UTC).
        "route_decided_at": parse_datetime(route.get("decided_at") or ""),
        "events": list(call.events.order_by("received_at", "pk")),
        "transitions": list(call.transitions.select_related("event").order_by("at", "pk")),
        "runs": runs,
        "requests": list(RequestLog.objects.filter(call_id=call.pk).order_by("created_at", "pk")),
        "notes": list(call.notes.order_by("created_at", "pk")),
        "recording": recording,
    }
    audit["story"] = call_story(audit)
    return audit


def _agent(call: Call) -> str:
    user_id = call.b24_user_id or call.device.bitrix24_user_id
    return agent_label(user_id, agent_names(user_ids=[user_id])) if user_id else ""


# Longer than any bridge request takes to be handled.
_HANDLING = timedelta(seconds=5)

_ENTITY_TYPES = {
    "contact": _lazy("contact"),
    "company": _lazy("company"),
    "lead": _lazy("lead"),
    "deal": _lazy("deal"),
}
_LOOKUP = {
    "not_found": _lazy("Not in the CRM: no contact, company or lead has this number."),
    "pending": _lazy("Not looked up yet (Bitrix24 did not answer in time; looked up again later)."),
    "unavailable": _lazy("Bitrix24 could not be asked: the caller is not known."),
}


def _person_label(person: Any) -> str:
    """ "Marta Nowak (#5)" for a person a lookup or a route stored (id and name)."""
    user_id = int(person["id"])
    return agent_label(user_id, {user_id: person.get("name") or ""})


def call_caller(*, call: Call) -> dict[str, Any]:
    """Who called, from the CRM lookup the call stored: the entity with a link to its card in
    Bitrix24, its responsible, its open deals (linked too), or why nobody is known."""
    crm = call.crm or {}
    entity = crm.get("entity") or None
    deals = crm.get("deals") or []
    status = crm.get("status") or call.crm_status or "pending"
    caller: dict[str, Any] = {"status": status, "entity": None, "deals": []}
    # The portal read once for the links the lookup did not store (a deal's never are).
    urls = crm_entity_urls() if deals or (entity and not entity.get("url")) else None
    if entity:
        kind = str(entity.get("type") or "")
        url = entity.get("url") or (
            urls((kind, int(entity["id"]))) if urls and entity.get("id") else ""
        )
        caller["entity"] = {
            "type": str(_ENTITY_TYPES.get(kind, kind)),
            "id": entity.get("id"),
            "name": entity.get("name") or "",
            "url": url,
        }
    else:
        caller["text"] = str(_LOOKUP.get(status, status))
    responsible = crm.get("responsible") or None
    if responsible:
        caller["responsible"] = _person_label(responsible)
    for deal in deals:
        caller["deals"].append(
            {
                "title": deal.get("title") or _("Deal #%(id)s") % {"id": deal.get("id")},
                "stage": deal.get("stage") or "",
                "url": urls(("deal", int(deal["id"]))) if urls and deal.get("id") else "",
            }
        )
    return caller


def _event_title(event: CallEvent) -> str:
    body = event.body or {}
    if event.type == "call.started":
        if body.get("direction") == "outgoing":
            return _("The phone reported an outgoing call")
        return _("The phone reported an incoming call ringing")
    if event.type == "call.answered":
        return _("The phone reported the call answered")
    if event.type == "call.ended":
        outcome = str(body.get("outcome") or "")
        label = Call.Outcome(outcome).label if outcome in Call.Outcome.values else outcome
        return _("The phone reported the end: %(outcome)s") % {"outcome": label}
    return _("The phone reported %(type)s") % {"type": event.type}


def _run_title(run: ActionRun) -> str:
    """A scenario action by its name (and its label); SIMtrix's own steps by their label."""
    if run.action_type not in ActionType.values:
        return run.label or run.action_type
    label = str(ActionType(run.action_type).label)
    return f"{label} ({run.label})" if run.label else label


class _Story(list[dict[str, Any]]):
    def add(self, at: Any, what: str, detail: str = "", *, tone: str = "ok", anchor: str) -> None:
        if isinstance(at, str):
            at = parse_datetime(at)
        if at is not None:
            self.append({"at": at, "what": what, "detail": detail, "tone": tone, "anchor": anchor})

    def in_order(self, events: list[CallEvent]) -> list[dict[str, Any]]:
        """By time; but a bridge event's row is written after its handling has run (which
        routes the call and plans its actions): what was stamped while an event was being
        handled follows that event."""
        received = sorted(event.received_at for event in events)

        def order(item: dict[str, Any]) -> tuple[datetime, int, datetime]:
            if item["anchor"] != "events":
                for at in received:
                    if timedelta(0) <= at - item["at"] <= _HANDLING:
                        return (at, 1, item["at"])
            return (item["at"], 0, item["at"])

        return sorted(self, key=order)


def call_story(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything that happened to the call as one list in time order: the phone's events,
    the route decision, each action planned and finished, each Bitrix24 request, the
    recording and the notes. Each item: `at`, `what`, `detail`, `tone` (ok, warn, error),
    `anchor` (the section of the page that has the details)."""
    story = _Story()
    _story_phone(story, audit)
    _story_route(story, audit["route"])
    for run in audit["runs"]:
        _story_run(story, run)
    for request in audit["requests"]:
        _story_request(story, request)
    recording = audit["recording"]
    if recording is not None:
        what = _("Recording uploaded (version %(version)s)") % {"version": recording.version}
        story.add(recording.uploaded_at, what, anchor="recording")
        story.add(recording.attached_at, _("Recording attached in Bitrix24"), anchor="recording")
    for note in audit["notes"]:
        story.add(note.created_at, _("Note written on the phone"), note.text[:120], anchor="notes")
        story.add(note.crm_synced_at, _("Note carried to Bitrix24"), anchor="notes")
    return story.in_order(audit["events"])


def _story_phone(story: _Story, audit: dict[str, Any]) -> None:
    for event in audit["events"]:
        status = event.response_status or 0
        detail = _("On the phone at %(time)s; answered HTTP %(status)s.") % {
            "time": _hms(event.occurred_at),
            "status": status or "-",
        }
        tone = "error" if status >= 400 else "ok"
        story.add(event.received_at, _event_title(event), detail, tone=tone, anchor="events")
    for transition in audit["transitions"]:
        # The phone's own changes are its events above; these came from elsewhere.
        if transition.event_id is None and transition.source != "bridge":
            what = str(transition.get_source_display())
            story.add(transition.at, what, transition.description, anchor="transitions")


def _story_route(story: _Story, route: Route) -> None:
    decided = parse_datetime(route.get("decided_at") or "")
    if decided is None:
        return
    person = route.get("user") or None
    rule = route.get("rule") or _("no rule")
    if person:
        who = _person_label(person)
        what = _("Routed to %(user)s by %(rule)s") % {"user": who, "rule": rule}
    else:
        what = _("Not routed (%(rule)s)") % {"rule": rule}
    detail = _("provisional: the caller was not known yet") if route.get("provisional") else ""
    story.add(decided, what, detail, anchor="routing")


def _story_run(story: _Story, run: ActionRun) -> None:
    title = {"action": _run_title(run)}
    due = _("due %(time)s") % {"time": _hms(run.due_at)} if run.due_at else ""
    story.add(run.created_at, _("Planned: %(action)s") % title, due, anchor="runs")
    if run.status == ActionRun.Status.DONE:
        story.add(run.done_at, _("Done: %(action)s") % title, anchor="runs")
    elif run.status == ActionRun.Status.FAILED:
        what = _("Failed: %(action)s") % title
        story.add(run.done_at or run.due_at, what, run.last_error, tone="error", anchor="runs")
    elif run.status == ActionRun.Status.SKIPPED:
        what = _("Skipped: %(action)s") % title
        story.add(run.done_at or run.created_at, what, run.last_error, tone="warn", anchor="runs")
    elif run.attempts and run.last_error:
        what = _("Retrying: %(action)s") % title
        story.add(run.due_at, what, run.last_error, tone="warn", anchor="runs")


def _story_request(story: _Story, request: RequestLog) -> None:
    method = request.method
    if request.is_batch and request.sub_methods:
        method = f"{method}: {', '.join(str(m) for m in request.sub_methods)}"
    failed = bool(request.error_code) or (request.http_status or 0) >= 400
    if failed:
        detail = f"{request.error_code} {request.error_description}".strip()
    else:
        detail = _("HTTP %(status)s in %(ms)s ms") % {
            "status": request.http_status or "-",
            "ms": request.duration_ms,
        }
    what = _("Bitrix24: %(method)s") % {"method": method}
    tone = "error" if failed else "ok"
    story.add(request.created_at, what, detail, tone=tone, anchor="crm-requests")


def _hms(moment: datetime | None) -> str:
    return f"{timezone.localtime(moment):%H:%M:%S}" if moment else ""
