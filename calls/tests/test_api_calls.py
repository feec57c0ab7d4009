"""Lookup, call detail, recordings, notes, heartbeat and the OpenAPI schema."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from calls.audio import audio_format_sniff
from calls.models import Call, CallNote, CallRecording, CallSettings, CallTransition, Device
from calls.recordings import recording_convert
from calls.selectors import call_settings_forget
from calls.services import call_b24_logged
from calls.tests.conftest import Bridge, ended
from calls.tests.test_audio import FORMATS, make_audio
from scenarios.models import ActionRun
from tenants.models import Tenant


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("upload")
    return {ext: make_audio(directory, ext, options) for ext, options, _ in FORMATS}


@pytest.fixture
def call(bridge: Bridge) -> Call:
    response = bridge.send(
        ended("rec-1", direction="incoming", phone_number="+48600111222", outcome="answered")
    )
    assert response.status_code == 201
    return Call.objects.get(call_id="rec-1")


@pytest.fixture
def media_root(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


# --- Lookup and detail --------------------------------------------------------------------


@pytest.mark.parametrize("number", ["not a number", "12", "+48" + "1" * 40])
def test_lookup_of_an_unparseable_number_is_400(bridge: Bridge, number: str) -> None:
    response = bridge.post("lookup/", {"phone_number": number})
    assert response.status_code == 400
    assert "phone_number" in response.json()


def test_lookup_answers_with_e164_crm_status_and_route(bridge: Bridge, device: Device) -> None:
    response = bridge.post("lookup/", {"phone_number": "600 111 222"})
    assert response.status_code == 200
    body = response.json()
    assert body["phone_number"] == "+48600111222"
    assert body["crm"]["status"] in {"found", "not_found", "pending", "unavailable"}
    # No CRM answer (alpha is not connected here): to "Others", the device's agent.
    assert body["route"]["user"]["id"] == device.bitrix24_user_id
    assert body["route"]["rule"] == "Others"


def test_unknown_call_is_404(bridge: Bridge) -> None:
    assert bridge.get("calls/nope/").status_code == 404


def test_call_detail_is_the_contract_resource(bridge: Bridge, call: Call) -> None:
    body = bridge.get("calls/rec-1/").json()
    assert set(body) >= {
        "call_id", "direction", "phone_number", "status", "outcome", "started_at", "answered_at",
        "ended_at", "duration_seconds", "crm", "route", "actions",
    }  # fmt: skip
    assert body["phone_number"] == "+48600111222"
    assert body["status"] == "ended"
    for action in body["actions"]:
        assert action["status"] in {
            "scheduled",
            "running",
            "done",
            "failed",
            "skipped",
            "cancelled",
        }


# --- Recordings -----------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["m4a", "amr", "ogg", "mp3", "wav", "3gp"])
def test_recording_upload_by_multipart_stores_the_audio(
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path, extension: str
) -> None:
    content = audio[extension].read_bytes()
    upload = SimpleUploadedFile(f"rec.{extension}", content, content_type="audio/whatever")
    response = bridge.put("calls/rec-1/recording/", {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    recording = CallRecording.objects.get(call=call)
    assert recording.size == len(content)
    with recording.original.open("rb") as handle:
        assert handle.read() == content
    if extension not in ("mp3", "wav"):
        assert recording_convert(recording_id=recording.pk, version=recording.version)
        recording.refresh_from_db()
        with recording.converted.open("rb") as handle:
            assert audio_format_sniff(handle.read(64)) == "mp3"


def test_recording_upload_as_raw_body(
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path
) -> None:
    content = audio["amr"].read_bytes()
    response = bridge.put("calls/rec-1/recording/", content, content_type="audio/amr")
    assert response.status_code == 201
    assert response.json()["format"] == "amr"
    assert CallRecording.objects.get(call=call).original_format == "amr"


def test_reupload_replaces_the_recording(
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path
) -> None:
    bridge.put("calls/rec-1/recording/", audio["wav"].read_bytes(), content_type="audio/wav")
    first = CallRecording.objects.get(call=call).original.name
    response = bridge.put(
        "calls/rec-1/recording/", audio["mp3"].read_bytes(), content_type="audio/mpeg"
    )
    assert response.json()["version"] == 2
    recording = CallRecording.objects.get(call=call)
    assert recording.original_format == "mp3"
    assert recording.original.name != first


def test_non_audio_upload_is_415_and_stores_nothing(
    bridge: Bridge, call: Call, media_root: Path
) -> None:
    response = bridge.put("calls/rec-1/recording/", b"%PDF-1.7 not audio", content_type="audio/mp4")
    assert response.status_code == 415
    upload = SimpleUploadedFile("x.m4a", b"<html>hi</html>", content_type="audio/mp4")
    assert bridge.put("calls/rec-1/recording/", {"file": upload}, format="multipart")\
        .status_code == 415  # fmt: skip
    assert not CallRecording.objects.exists()
    assert not any(media_root.rglob("*.*"))


def test_upload_over_the_tenant_limit_is_413(
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path, alpha: Tenant
) -> None:
    CallSettings.objects.update_or_create(singleton=1, defaults={"upload_limit_mb": 1})
    call_settings_forget()
    try:
        big = audio["wav"].read_bytes() + b"\0" * (1024 * 1024)
        assert (
            bridge.put("calls/rec-1/recording/", big, content_type="audio/wav").status_code == 413
        )
        upload = SimpleUploadedFile("big.wav", big, content_type="audio/wav")
        response = bridge.put("calls/rec-1/recording/", {"file": upload}, format="multipart")
        assert response.status_code == 413
        assert not CallRecording.objects.exists()
    finally:
        call_settings_forget()


def test_upload_for_an_unknown_call_is_404(bridge: Bridge, audio: dict[str, Path]) -> None:
    response = bridge.put(
        "calls/nope/recording/", audio["mp3"].read_bytes(), content_type="audio/mpeg"
    )
    assert response.status_code == 404


def test_recording_waits_for_finish_then_is_planned_once(
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path
) -> None:
    bridge.put("calls/rec-1/recording/", audio["mp3"].read_bytes(), content_type="audio/mpeg")
    assert not ActionRun.objects.filter(action_type="attach_recording").exists()
    call_b24_logged(call=call, mode=Call.LogMode.TELEPHONY, user_id=5, activity_id=77)
    assert list(
        ActionRun.objects.filter(action_type="attach_recording").values_list("params", flat=True)
    ) == [{"version": 1}]
    # Finish first, upload later: planned at upload, for the new version.
    bridge.put("calls/rec-1/recording/", audio["wav"].read_bytes(), content_type="audio/wav")
    assert sorted(
        ActionRun.objects.filter(action_type="attach_recording").values_list(
            "dedupe_key", flat=True
        )
    ) == [f"call:{call.pk}:attach_recording:v1", f"call:{call.pk}:attach_recording:v2"]


def test_retention_deletes_old_audio_but_keeps_the_record(  # noqa: PLR0917 - fixtures
    bridge: Bridge, call: Call, audio: dict[str, Path], media_root: Path, alpha: Tenant,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:  # fmt: skip
    from calls.recordings import recordings_expire

    bridge.put("calls/rec-1/recording/", audio["wav"].read_bytes(), content_type="audio/wav")
    recording = CallRecording.objects.get(call=call)
    path = Path(recording.original.path)
    assert path.exists()
    CallSettings.objects.update_or_create(singleton=1, defaults={"retention_days": 30})
    assert recordings_expire(now=timezone.now() + timedelta(days=29)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert recordings_expire(now=timezone.now() + timedelta(days=31)) == 1
    recording.refresh_from_db()
    assert recording.deleted_at is not None
    assert not path.exists()
    assert recording.sha256
    assert recording.size
    assert CallTransition.objects.filter(call=call, description__contains="retention").exists()


def test_retention_task_is_scheduled_for_every_tenant(settings: Settings) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["expire-recordings"]
    # One task in public queues the retention in every active tenant (tenants.fanout).
    assert entry["task"] == "calls.recordings_expire_all"
    assert "tenant_schemas" not in entry


# --- Notes and heartbeat --------------------------------------------------------------------


def test_notes_are_kept_on_the_call(bridge: Bridge, call: Call) -> None:
    response = bridge.post("calls/rec-1/notes/", {"text": "Wants an offer by Friday."})
    assert response.status_code == 201
    assert response.json()["text"] == "Wants an offer by Friday."
    assert list(CallNote.objects.filter(call=call).values_list("text", flat=True)) == [
        "Wants an offer by Friday."
    ]


@pytest.mark.parametrize("text", ["", "   ", "x" * 10_001])
def test_note_length_is_1_to_10000(bridge: Bridge, call: Call, text: str) -> None:
    assert bridge.post("calls/rec-1/notes/", {"text": text}).status_code == 400
    assert not CallNote.objects.exists()


def test_heartbeat_marks_the_device_seen(bridge: Bridge, device: Device) -> None:
    response = bridge.post("heartbeat/", {"app_version": "1.4.2"})
    assert response.status_code == 200
    assert "server_time" in response.json()
    device.refresh_from_db()
    assert device.app_version == "1.4.2"
    assert device.last_seen_at is not None
    assert bridge.post("heartbeat/", {}).status_code == 400


# --- OpenAPI ------------------------------------------------------------------------------


def test_openapi_schema_describes_every_endpoint_and_error(alpha: Tenant) -> None:
    client = Client(HTTP_HOST="alpha.localhost")
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for endpoint in [
        "/api/bridge/v1/events/",
        "/api/bridge/v1/lookup/",
        "/api/bridge/v1/calls/{call_id}/",
        "/api/bridge/v1/calls/{call_id}/recording/",
        "/api/bridge/v1/calls/{call_id}/notes/",
        "/api/bridge/v1/heartbeat/",
        "/api/bridge/v1/commands/",
        "/api/bridge/v1/commands/{command_id}/ack/",
    ]:
        assert endpoint in paths, endpoint
    poll = paths["/api/bridge/v1/commands/"]["get"]
    assert [p["name"] for p in poll["parameters"]] == ["wait"]
    assert {"200", "400", "401", "429"} <= set(poll["responses"])
    ack = paths["/api/bridge/v1/commands/{command_id}/ack/"]["post"]["responses"]
    assert {"200", "400", "404", "409"} <= set(ack)
    command = schema["components"]["schemas"]["Command"]["properties"]
    assert {"command_id", "type", "expires_at", "phone_number", "call_id", "crm"} <= set(command)
    events = paths["/api/bridge/v1/events/"]["post"]["responses"]
    assert {"200", "201", "400", "401", "409", "413", "415", "429"} <= set(events)
    upload = paths["/api/bridge/v1/calls/{call_id}/recording/"]["put"]["responses"]
    assert {"201", "404", "413", "415"} <= set(upload)
    assert schema["components"]["securitySchemes"]["deviceToken"]["scheme"] == "bearer"
    event = schema["components"]["schemas"]["Event"]["properties"]
    assert all(event[name].get("description") for name in ("event_id", "call_id", "occurred_at"))
    assert client.get("/api/docs/").status_code == 200


def test_recording_storage_switches_to_s3_by_environment() -> None:
    env = {
        "SIMTRIX_S3_BUCKET": "recordings",
        "SIMTRIX_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "DJANGO_SECRET_KEY": "x",
    }
    code = (
        "import django; django.setup(); from django.core.files.storage import storages;"
        "s = storages['default']; print(type(s).__name__, s.bucket_name, s.endpoint_url)"
    )
    import os
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
        check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.stdout.split() == ["S3Storage", "recordings", "http://127.0.0.1:9000"]
