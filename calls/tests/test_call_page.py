"""The call page answers "what happened to this call?": who called (linked to the card in
Bitrix24), then everything in the order it happened."""

from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.models import Call
from calls.tests.conftest import Bridge, ended, started
from crm.models import RequestLog
from scenarios.models import ActionRun
from tenants.models import Tenant


def _story(page: str) -> list[tuple[str, str]]:
    """(tone, what) of each row of the page's story, in the order shown."""
    table = page.split('id="story"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr class="story-(\w+)">.*?</td><td>(.*?)<a href', table, re.S)
    return [(tone, re.sub(r"<[^>]+>", "", what).strip()) for tone, what in rows]


def test_the_call_page_tells_who_called_and_the_story_in_order(
    alpha: Tenant, bridge: Bridge
) -> None:
    bridge.send(started("s"))
    bridge.send(ended("s"))
    call = Call.objects.get(call_id="s")
    call.crm = {
        "status": "found",
        "entity": {
            "type": "contact",
            "id": 7,
            "name": "Anna Kowalska",
            "url": "https://portal.example/crm/contact/details/7/",
        },
        "responsible": {"id": 5, "name": "Marta Nowak"},
        "deals": [{"id": 3, "title": "Roof repair", "pipeline": 0, "stage": "NEW"}],
    }
    call.save(update_fields=["crm"])
    later = timezone.now() + timedelta(minutes=1)
    run = ActionRun.objects.create(
        call=call,
        action_type="log_call",
        due_at=later,
        status=ActionRun.Status.FAILED,
        attempts=12,
        last_error="ACCESS_DENIED: telephony scope missing",
        done_at=later + timedelta(seconds=30),
    )
    RequestLog.objects.create(
        method="telephony.externalcall.finish",
        http_status=401,
        error_code="ACCESS_DENIED",
        call_id=call.pk,
    )
    RequestLog.objects.filter(call_id=call.pk).update(created_at=later + timedelta(seconds=10))

    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    page = client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()

    assert 'href="https://portal.example/crm/contact/details/7/"' in page
    assert ">Anna Kowalska</a>" in page
    assert "Responsible in Bitrix24: Marta Nowak (#5)" in page
    assert "Roof repair" in page
    story = _story(page)
    whats = [what for _tone, what in story]
    assert whats[0] == "The phone reported an incoming call ringing"
    routed = next(i for i, what in enumerate(whats) if what.startswith("Routed to "))
    end = whats.index("The phone reported the end: answered")
    planned = whats.index("Planned: Log the call (timeline activity)")
    request = whats.index("Bitrix24: telephony.externalcall.finish")
    failed = whats.index("Failed: Log the call (timeline activity)")
    lookup = whats.index("Planned: Look the caller up in Bitrix24")
    assert 0 < routed < lookup < end < planned < request < failed
    assert story[request][0] == "error"
    assert story[failed][0] == "error"
    # The status line says the same at the top, with the run to retry.
    assert 'data-kind="failed"' in page
    assert f'name="_selected_action" value="{run.pk}"' in page
    # The call list links the caller to the card too.
    listing = client.get("/admin/calls/call/").content.decode()
    assert (
        '<a href="https://portal.example/crm/contact/details/7/" target="_blank" '
        'rel="noopener">Anna Kowalska (contact 7)</a>'
    ) in listing
