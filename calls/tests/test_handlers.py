"""The call lifecycle in Bitrix24, against the sandbox portal over real HTTPS.

Outbox runs are executed in-process here (`run_due`); test_worker.py does the same with a real
Celery worker where reliability is the point.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from calls.models import Call, CallRecording, Device
from calls.tests.conftest import T0, Bridge, ended, event, started
from calls.tests.test_audio import make_audio
from scenarios.models import ActionRun
from scenarios.outbox import run_execute, run_plan

REGISTER = "telephony.externalcall.register"
FINISH = "telephony.externalcall.finish"
ATTACH = "telephony.externalcall.attachrecord"


def run_due(rounds: int = 10) -> list[tuple[str, str]]:
    """Executes every due run, and those they make due, like a worker would."""
    executed = []
    for _ in range(rounds):
        due = list(
            ActionRun.objects.filter(status="scheduled", due_at__lte=timezone.now()).order_by("pk")
        )
        if not due:
            break
        for run in due:
            executed.append((run.action_type, run_execute(run.pk)))
    return executed


def ok_requests(portal: Any, method: str) -> list[dict[str, Any]]:
    return [r for r in portal.state.query_requests(method) if r["status"] == 200]


@pytest.fixture
def media_root(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def test_known_caller_is_registered_shown_and_finished_with_the_right_parameters(
    alpha_portal: Any, bridge: Bridge, device: Device
) -> None:
    response = bridge.send(started())
    assert response.json()["crm"]["status"] == "found"
    assert response.json()["crm"]["entity"]["id"] == 12
    run_due()  # while it rings
    bridge.send(event("call.answered", at=T0 + timedelta(seconds=8)))
    bridge.send(ended())
    run_due()

    call = Call.objects.get()
    [register] = ok_requests(alpha_portal, REGISTER)
    assert register["params"] == {
        "USER_ID": 5,
        "PHONE_NUMBER": "+48600111222",
        "TYPE": 2,
        "CALL_START_DATE": "2026-11-21T14:32:05+01:00",
        "CRM_CREATE": 0,
        "SHOW": 1,
        "LINE_NUMBER": "+48500100200",
        "EXTERNAL_CALL_ID": f"simtrix:alpha:{call.pk}",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": 12,
    }
    [finish] = ok_requests(alpha_portal, FINISH)
    assert finish["params"] == {
        "CALL_ID": call.b24_call_id,
        "USER_ID": 5,
        "DURATION": 95,
        "STATUS_CODE": "200",
    }
    assert call.b24_log_mode == Call.LogMode.TELEPHONY
    assert call.b24_finished_at is not None
    assert (call.b24_entity_type, call.b24_entity_id) == ("contact", 12)
    activity = alpha_portal.state.activities[call.b24_activity_id]
    assert (activity["OWNER_TYPE_ID"], activity["OWNER_ID"]) == (3, 12)
    assert activity["RESPONSIBLE_ID"] == 5
    detail = bridge.get("calls/c-1/").json()
    log = next(a for a in detail["actions"] if a["type"] == "log_call")
    assert log["status"] == "done"
    assert log["result"]["b24_call_id"] == call.b24_call_id


@pytest.mark.parametrize(
    ("direction", "outcome", "duration", "code", "sent_duration"),
    [
        ("incoming", "answered", 61, "200", 61),
        ("incoming", "missed", 0, "304", 0),
        ("incoming", "rejected", 0, "603", 0),
        ("outgoing", "busy", 0, "486", 0),
        ("outgoing", "no_answer", 0, "480", 0),
        ("outgoing", "cancelled", 0, "603-S", 0),
        ("outgoing", "failed", 3, "OTHER", 0),
    ],
)
def test_lone_call_ended_is_registered_then_finished_once_with_its_status_code(  # noqa: PLR0917
    alpha_portal: Any,
    bridge: Bridge,
    direction: str,
    outcome: str,
    duration: int,
    code: str,
    sent_duration: int,
) -> None:
    bridge.send(ended(direction=direction, phone_number="+48 600 111 222", outcome=outcome,
                      duration_seconds=duration))  # fmt: skip
    run_due()
    call = Call.objects.get()
    [register] = ok_requests(alpha_portal, REGISTER)
    assert register["params"]["TYPE"] == (2 if direction == "incoming" else 1)
    assert register["params"]["SHOW"] == 0  # nobody needs a card for a call that is over
    [finish] = ok_requests(alpha_portal, FINISH)
    assert finish["params"]["STATUS_CODE"] == code
    assert finish["params"]["DURATION"] == sent_duration
    assert finish["params"]["CALL_ID"] == call.b24_call_id


def test_finish_is_sent_once_per_call(alpha_portal: Any, bridge: Bridge) -> None:
    bridge.send(ended(direction="incoming", phone_number="+48600111222"))
    run_due()
    call = Call.objects.get()
    again = run_plan(
        call_id=call.pk, action_type="log_call", dedupe_key="again", due_at=timezone.now()
    )
    assert run_execute(again.pk) == "done"
    again.refresh_from_db()
    assert again.result["already_logged"] is True
    assert len(ok_requests(alpha_portal, FINISH)) == 1
    assert len(ok_requests(alpha_portal, REGISTER)) == 1


def test_recording_uploaded_before_finish_is_converted_and_attached_after_it(
    alpha_portal: Any, bridge: Bridge, media_root: Path
) -> None:
    bridge.send(started())
    m4a = make_audio(media_root, "m4a", ["-codec:a", "aac"])
    assert bridge.put("calls/c-1/recording/", m4a.read_bytes(), content_type="audio/mp4")\
        .status_code == 201  # fmt: skip
    run_due()
    assert not alpha_portal.state.records  # not finished yet: nothing to attach to
    bridge.send(ended())
    run_due()
    recording = CallRecording.objects.get()
    assert recording.attached_version == 1
    [record] = alpha_portal.state.records.values()
    assert record["FILENAME"].endswith(".mp3")
    with recording.converted.open("rb") as handle:
        assert record["SHA256"] == hashlib.sha256(handle.read()).hexdigest()
    call = Call.objects.get()
    assert record["CALL_ID"] == call.b24_call_id
    assert alpha_portal.state.activities[call.b24_activity_id]["STORAGE_ELEMENT_IDS"] == [
        record["FILE_ID"]
    ]


def test_recording_uploaded_after_finish_is_attached_and_reupload_replaces_it(
    alpha_portal: Any, bridge: Bridge, media_root: Path
) -> None:
    bridge.send(ended(direction="incoming", phone_number="+48600111222"))
    run_due()
    wav = make_audio(media_root, "wav", ["-codec:a", "pcm_s16le"])
    bridge.put("calls/c-1/recording/", wav.read_bytes(), content_type="audio/wav")
    run_due()
    mp3 = make_audio(media_root, "mp3", ["-codec:a", "libmp3lame"])
    bridge.put("calls/c-1/recording/", mp3.read_bytes(), content_type="audio/mpeg")
    run_due()
    records = sorted(alpha_portal.state.records.values(), key=lambda r: r["FILE_ID"])
    assert [r["SHA256"] for r in records] == [
        hashlib.sha256(wav.read_bytes()).hexdigest(),
        hashlib.sha256(mp3.read_bytes()).hexdigest(),
    ]
    assert CallRecording.objects.get().attached_version == 2


def test_portal_refusing_telephony_for_webhooks_logs_a_crm_activity_and_says_why(
    alpha_portal: Any, bridge: Bridge
) -> None:
    from django.contrib.auth.models import User

    alpha_portal.state.webhook_telephony_denied = True
    bridge.send(ended(direction="incoming", phone_number="+48600111222", outcome="missed",
                      duration_seconds=0))  # fmt: skip
    run_due()
    call = Call.objects.get()
    assert call.b24_log_mode == Call.LogMode.ACTIVITY
    assert "WRONG_AUTH_TYPE" in call.b24_log_note
    assert "OAuth" in call.b24_log_note
    assert not ok_requests(alpha_portal, FINISH)
    [add] = ok_requests(alpha_portal, "crm.activity.add")
    fields = add["params"]["fields"]
    assert (fields["OWNER_TYPE_ID"], fields["OWNER_ID"]) == (3, 12)
    assert fields["DIRECTION"] == 1
    activity = alpha_portal.state.activities[call.b24_activity_id]
    assert activity["TYPE_ID"] == 2

    admin = Client(HTTP_HOST="alpha.localhost")
    admin.force_login(User.objects.create_superuser("boss", password="pw"))
    page = admin.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert "Logged as a CRM activity, not as a telephony call" in page
    assert "Local OAuth application" in page
    assert "Local OAuth application" in admin.get("/admin/calls/call/").content.decode()


def test_bitrix24_down_during_the_call_finishes_it_once_when_it_is_back(
    alpha_portal: Any, bridge: Bridge
) -> None:
    alpha_portal.set_fault("down")
    bridge.send(started())
    bridge.send(ended())
    call = Call.objects.get()
    # The lookup found Bitrix24 down: it is asked again a few seconds later (without the wait).
    ActionRun.objects.filter(call=call, status="scheduled").update(due_at=timezone.now())
    run_due()
    assert call.b24_finished_at is None
    waiting = ActionRun.objects.filter(call=call, status="scheduled", attempts__gte=1)
    assert waiting.exists()
    assert all(run.last_error for run in waiting)

    alpha_portal.clear_faults()
    for _ in range(5):  # the backoff, without the waiting
        ActionRun.objects.filter(call=call, status="scheduled").update(due_at=timezone.now())
        run_due()
    call.refresh_from_db()
    assert call.b24_finished_at is not None
    assert len(ok_requests(alpha_portal, FINISH)) == 1
    assert len(ok_requests(alpha_portal, REGISTER)) == 1
    assert len(alpha_portal.calls()["finished"]) == 1
