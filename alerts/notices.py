"""What an incident says: the alert and its recovery notice, in the active language.

Rendered when they are sent (in the tenant's language, alerts.services) and when the admin
shows an incident (in the reader's), from what the check stored in the incident's details.
Times are the tenant's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from alerts.checks import from_iso
from alerts.choices import IncidentKind, Phase
from alerts.models import Incident
from calls.selectors import agent_label, agent_names
from reports.choices import CallbackTaskState
from scenarios.choices import ActionType, InternalAction
from tenants.context import tenant_public_url, tenant_timezone

# The runs the server plans itself, named for a person (the scenario actions have their labels).
INTERNAL_ACTION_LABELS = {
    InternalAction.REGISTER_CALL: _("Register the call in Bitrix24"),
    InternalAction.HIDE_CARD: _("Hide the CRM card"),
    InternalAction.LOOKUP_CALLER: _("Look the caller up in the CRM"),
    InternalAction.ATTACH_RECORDING: _("Attach the recording"),
    InternalAction.TRANSFER_RESPONSIBLE: _("Hand the call to the responsible person"),
    InternalAction.COMPLETE_CALLBACK_TASK: _("Complete the callback task"),
}


@dataclass(frozen=True)
class Notice:
    title: str  # one line: an email's subject
    text: str  # the whole message: a Bitrix24 notification, an email's body


def action_label(action_type: str) -> str:
    if action_type in ActionType.values:
        return str(ActionType(action_type).label)
    try:
        return str(INTERNAL_ACTION_LABELS[InternalAction(action_type)])
    except ValueError:
        return action_type


def _local(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    return f"{moment.astimezone(ZoneInfo(tenant_timezone())):%Y-%m-%d %H:%M}"


def _hour_span(details: dict[str, Any]) -> tuple[str, str]:
    start = from_iso(details.get("hour"))
    if start is None:
        return "?", "?"
    end = start + timedelta(hours=1)
    return _local(start), f"{end.astimezone(ZoneInfo(tenant_timezone())):%H:%M}"


def _device_silent(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "The phone %(device)s (%(number)s) has been silent since %(since)s, in office hours."
    ) % {
        "device": details.get("device", incident.subject),
        "number": details.get("number", ""),
        "since": _local(from_iso(details.get("last_seen_at"))),
    }


def _runs_failed(incident: Incident, details: dict[str, Any]) -> str:
    start, end = _hour_span(details)
    count = int(details.get("count") or 0)
    text = ngettext(
        "%(count)d run of “%(action)s” failed after its retries between %(start)s and %(end)s.",
        "%(count)d runs of “%(action)s” failed after their retries between %(start)s and %(end)s.",
        count,
    ) % {
        "count": count,
        "action": action_label(str(details.get("action_type") or incident.subject)),
        "start": start,
        "end": end,
    }
    if details.get("error"):
        text += " " + gettext("Last error: %(error)s") % {"error": details["error"]}
    return text


def _bitrix24_auth(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "Bitrix24 refuses SIMtrix's connection (%(error)s): calls do not reach the CRM "
        "until it is fixed in SIMtrix's Bitrix24 connection."
    ) % {"error": details.get("error") or details.get("code") or "?"}


def _bitrix24_scope(incident: Incident, details: dict[str, Any]) -> str:
    missing = ", ".join(details.get("missing") or []) or details.get("error") or "?"
    return gettext(
        "SIMtrix's Bitrix24 connection lacks scopes it needs: %(scopes)s. Tick them on the "
        "webhook or application in Bitrix24."
    ) % {"scopes": missing}


def _bitrix24_telephony(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "Bitrix24 refuses telephony for SIMtrix's connection: calls are logged as CRM "
        "activities (no call statistics, no recording on the call). Connect SIMtrix "
        "through the local application to log them as calls."
    )


def _bitrix24_down(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "The Bitrix24 portal %(portal)s has not answered since %(since)s (%(error)s). "
        "SIMtrix keeps the calls' work and sends it when the portal is back."
    ) % {
        "portal": incident.subject,
        "since": _local(incident.opened_at),
        "error": details.get("code") or "?",
    }


def _rule_broken(incident: Incident, details: dict[str, Any]) -> str:
    return gettext("The routing rule “%(rule)s” is broken and skipped: %(reason)s") % {
        "rule": details.get("rule", incident.subject),
        "reason": details.get("reason", ""),
    }


def _action_broken(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "The action “%(action)s” of the scenario “%(scenario)s” names what Bitrix24 no "
        "longer has: %(problems)s"
    ) % {
        "action": action_label(str(details.get("action_type") or "")),
        "scenario": details.get("scenario", incident.subject),
        "problems": details.get("problems", ""),
    }


def _missed_summary(incident: Incident, details: dict[str, Any]) -> str:
    count = int(details.get("count") or 0)
    return ngettext(
        "%(count)d missed call has not been returned (since %(since)s).",
        "%(count)d missed calls have not been returned (since %(since)s).",
        count,
    ) % {"count": count, "since": _local(from_iso(details.get("since")))}


_DESCRIPTIONS: dict[str, Callable[[Incident, dict[str, Any]], str]] = {
    IncidentKind.DEVICE_SILENT: _device_silent,
    IncidentKind.RUNS_FAILED: _runs_failed,
    IncidentKind.BITRIX24_AUTH: _bitrix24_auth,
    IncidentKind.BITRIX24_SCOPE: _bitrix24_scope,
    IncidentKind.BITRIX24_TELEPHONY: _bitrix24_telephony,
    IncidentKind.BITRIX24_DOWN: _bitrix24_down,
    IncidentKind.RULE_BROKEN: _rule_broken,
    IncidentKind.ACTION_BROKEN: _action_broken,
    IncidentKind.MISSED_SUMMARY: _missed_summary,
}


def incident_description(incident: Incident) -> str:
    """One sentence: what is (or was) wrong."""
    describe = _DESCRIPTIONS.get(incident.kind)
    if describe is None:
        return incident.subject or incident.subject_key
    return describe(incident, incident.details or {})


def _device_back(incident: Incident, details: dict[str, Any]) -> str:
    values = {
        "device": details.get("device", incident.subject),
        "number": details.get("number", ""),
        "since": _local(from_iso(details.get("last_seen_at"))),
        "until": _local(incident.cleared_at),
    }
    if (details.get("cleared") or {}).get("reason") == "revoked":
        return (
            gettext("The phone %(device)s (%(number)s) was revoked: it is no longer watched.")
            % values
        )
    return (
        gettext("The phone %(device)s (%(number)s) is back: silent from %(since)s until %(until)s.")
        % values
    )


def _runs_resolved(incident: Incident, details: dict[str, Any]) -> str:
    start, end = _hour_span(details)
    return gettext(
        "The failed runs of “%(action)s” (%(start)s to %(end)s) are resolved: retried or removed."
    ) % {
        "action": action_label(str(details.get("action_type") or incident.subject)),
        "start": start,
        "end": end,
    }


def _bitrix24_auth_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "SIMtrix's Bitrix24 connection works again (refused from %(since)s until %(until)s)."
    ) % {"since": _local(incident.opened_at), "until": _local(incident.cleared_at)}


def _bitrix24_scope_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext("SIMtrix's Bitrix24 connection has every scope it needs again.")


def _bitrix24_telephony_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext("Bitrix24 accepts SIMtrix's telephony again: calls are logged as calls.")


def _bitrix24_down_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "The Bitrix24 portal %(portal)s answers again (down from %(since)s until %(until)s)."
    ) % {
        "portal": incident.subject,
        "since": _local(incident.opened_at),
        "until": _local(incident.cleared_at),
    }


def _rule_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext("The routing rule “%(rule)s” is no longer broken.") % {
        "rule": details.get("rule", incident.subject)
    }


def _action_back(incident: Incident, details: dict[str, Any]) -> str:
    return gettext(
        "The action “%(action)s” of the scenario “%(scenario)s” is no longer broken."
    ) % {
        "action": action_label(str(details.get("action_type") or "")),
        "scenario": details.get("scenario", incident.subject),
    }


_RECOVERIES: dict[str, Callable[[Incident, dict[str, Any]], str]] = {
    IncidentKind.DEVICE_SILENT: _device_back,
    IncidentKind.RUNS_FAILED: _runs_resolved,
    IncidentKind.BITRIX24_AUTH: _bitrix24_auth_back,
    IncidentKind.BITRIX24_SCOPE: _bitrix24_scope_back,
    IncidentKind.BITRIX24_TELEPHONY: _bitrix24_telephony_back,
    IncidentKind.BITRIX24_DOWN: _bitrix24_down_back,
    IncidentKind.RULE_BROKEN: _rule_back,
    IncidentKind.ACTION_BROKEN: _action_back,
}


def recovery_description(incident: Incident) -> str:
    """One sentence: that it resolved."""
    describe = _RECOVERIES.get(incident.kind)
    if describe is None:
        return gettext("Resolved: %(what)s") % {"what": incident.subject or incident.subject_key}
    return describe(incident, incident.details or {})


def _summary_lines(details: dict[str, Any]) -> list[str]:
    calls = details.get("calls") or []
    names = agent_names(user_ids=[int(row["responsible_id"]) for row in calls])
    lines = []
    for row in calls:
        state = row.get("callback_task") or ""
        lines.append(
            gettext("%(number)s %(caller)s, missed at %(when)s, %(who)s, callback task: %(task)s")
            % {
                "number": row.get("number", ""),
                "caller": f"({row['caller']})" if row.get("caller") else "",
                "when": _local(from_iso(row.get("started_at"))),
                "who": agent_label(int(row["responsible_id"]), names),
                "task": CallbackTaskState(state).label
                if state in CallbackTaskState.values
                else state,
            }
        )
    rest = int(details.get("count") or 0) - len(calls)
    if rest > 0:
        lines.append(
            ngettext("…and %(count)d more.", "…and %(count)d more.", rest) % {"count": rest}
        )
    return lines


def incident_url(incident: Incident) -> str:
    return tenant_public_url(reverse("admin:alerts_incident_change", args=[incident.pk]))


def notice_render(incident: Incident, phase: str) -> Notice:
    """The notice as sent: a headline, what happened, and where to read more."""
    if phase == Phase.CLEARED:
        sentence = recovery_description(incident)
        title = gettext("SIMtrix, resolved: %(text)s") % {"text": sentence}
    elif incident.kind == IncidentKind.MISSED_SUMMARY:
        sentence = incident_description(incident)
        title = gettext("SIMtrix daily summary: %(text)s") % {"text": sentence}
    else:
        sentence = incident_description(incident)
        title = gettext("SIMtrix alert: %(text)s") % {"text": sentence}
    lines = [title]
    if incident.kind == IncidentKind.MISSED_SUMMARY:
        lines += _summary_lines(incident.details or {})
        report = _report_url()
        if report:
            lines.append(gettext("Everyone still waiting: %(url)s") % {"url": report})
    url = incident_url(incident)
    if url:
        lines.append(gettext("Details: %(url)s") % {"url": url})
    return Notice(title=title, text="\n".join(lines))


def _report_url() -> str:
    """The reports' list of missed calls not returned (when the reports are installed)."""
    try:
        path = reverse("admin:reports_notreturnedreport_changelist")
    except NoReverseMatch:
        return ""
    return tenant_public_url(path)
