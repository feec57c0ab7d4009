"""A call's recording: kept (one current version), converted for Bitrix24 when it needs MP3,
attached once the call is logged there, and deleted after the tenant's retention."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any

from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from calls.audio import (
    BITRIX24_FORMATS,
    SNIFF_BYTES,
    ConversionFailed,
    audio_convert_to_mp3,
    audio_format_sniff,
)
from calls.models import Call, CallRecording, CallTransition
from calls.selectors import call_settings_get
from scenarios.choices import InternalAction
from scenarios.outbox import run_plan
from tenants.fanout import task_queue

logger = logging.getLogger(__name__)


def recording_attach_plan(*, call_id: int, version: int, run_plan: Any) -> None:
    run_plan(
        call_id=call_id,
        action_type=InternalAction.ATTACH_RECORDING,
        dedupe_key=f"call:{call_id}:attach_recording:v{version}",
        due_at=timezone.now(),
        params={"version": version},
    )


class NotAudio(Exception):
    pass


class RecordingTooLarge(Exception):
    pass


def recording_limit_bytes() -> int:
    return call_settings_get().upload_limit_mb * 1024 * 1024


def call_recording_store(
    *, call: Call, upload: IO[bytes], size: int, name: str = "", content_type: str = ""
) -> CallRecording:
    """Keeps the call's audio (replacing an earlier upload) and plans its way to Bitrix24."""

    if size > recording_limit_bytes():
        raise RecordingTooLarge(
            gettext("The recording is larger than %(limit)s bytes.")
            % {"limit": recording_limit_bytes()}
        )
    upload.seek(0)
    audio_format = audio_format_sniff(upload.read(SNIFF_BYTES))
    if audio_format is None:
        raise NotAudio(gettext("The upload is not an audio file this server recognises."))
    upload.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: upload.read(1024 * 1024), b""):
        digest.update(chunk)
    upload.seek(0)

    with transaction.atomic():
        locked = Call.objects.select_for_update().get(pk=call.pk)
        recording = CallRecording.objects.filter(call=locked).first()
        stale: list[str] = []
        if recording is None:
            recording = CallRecording(call=locked, version=1)
        else:
            stale = [f.name for f in (recording.original, recording.converted) if f.name]
            recording.version += 1
        version = recording.version
        recording.original_format = audio_format
        recording.original_content_type = content_type[:100]
        recording.original_name = Path(name).name[:200] if name else ""
        recording.size = size
        recording.sha256 = digest.hexdigest()
        recording.uploaded_at = timezone.now()
        recording.converted = ""
        recording.converted_at = None
        recording.conversion_error = ""
        recording.deleted_at = None
        recording.original.save(f"v{version}-original.{audio_format}", File(upload), save=False)
        recording.save()
        CallTransition.objects.create(
            call=locked,
            source=CallTransition.Source.RECORDING,
            from_status=locked.status,
            to_status=locked.status,
            changes={"recording_version": [version - 1 or None, version]},
            description=f"Recording v{version} uploaded ({audio_format}, {size} bytes)",
        )
        if locked.b24_finished_at is not None:
            recording_attach_plan(call_id=locked.pk, version=version, run_plan=run_plan)
        recording_pk = recording.pk
        transaction.on_commit(lambda: _files_delete(stale))
        if audio_format not in BITRIX24_FORMATS:
            transaction.on_commit(lambda: _queue_conversion(recording_pk, version))
    return recording


def _queue_conversion(recording_id: int, version: int) -> None:
    from calls.tasks import recording_convert_task  # noqa: PLC0415 — Celery's loop: the task calls back here

    # Lost with the broker, it is done when the recording is attached (recording_bitrix24_file).
    task_queue(
        recording_convert_task, recording_id, version, what=f"recording {recording_id}'s conversion"
    )


def _files_delete(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:  # a file already gone is what we wanted
            logger.warning("could not delete recording file %s", name)


def recording_bitrix24_file(*, recording: CallRecording) -> tuple[str, bytes]:
    """The file name and content Bitrix24 gets (MP3/WAV), converting first when needed."""
    if recording.original_format in BITRIX24_FORMATS:
        with recording.original.open("rb") as handle:
            content = handle.read()
        return f"call-{recording.call_id}.{recording.original_format}", content
    recording_convert(recording_id=recording.pk, version=recording.version)
    recording.refresh_from_db()
    if not recording.converted:
        raise ConversionFailed(recording.conversion_error or "the recording was not converted")
    with recording.converted.open("rb") as handle:
        return f"call-{recording.call_id}.mp3", handle.read()


def recording_convert(*, recording_id: int, version: int) -> bool:
    """Makes the MP3 of a recording that is not MP3/WAV; idempotent, safe to run twice."""
    recording = CallRecording.objects.filter(pk=recording_id, version=version).first()
    if recording is None or recording.deleted_at is not None or recording.converted:
        return False
    if recording.original_format in BITRIX24_FORMATS or not recording.original:
        return False
    suffix = f".{recording.original_format}"
    with tempfile.NamedTemporaryFile(suffix=suffix) as local:
        # The original may live on S3: ffmpeg wants a local file.
        with recording.original.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                local.write(chunk)
        local.flush()
        try:
            mp3 = audio_convert_to_mp3(Path(local.name))
        except ConversionFailed as exc:
            CallRecording.objects.filter(pk=recording_id, version=version).update(
                conversion_error=str(exc)[:2000]
            )
            raise

    name = default_storage.save(
        recording.original.field.generate_filename(recording, f"v{version}.mp3"), ContentFile(mp3)
    )
    # A re-upload or a concurrent conversion may have won meanwhile: then this file is surplus.
    won = CallRecording.objects.filter(pk=recording_id, version=version, converted="").update(
        converted=name, converted_at=timezone.now(), conversion_error=""
    )
    if not won:
        _files_delete([name])
    return bool(won)


def recording_attached(*, recording: CallRecording, version: int, file_id: int | None) -> None:
    with transaction.atomic():
        CallRecording.objects.filter(pk=recording.pk).update(
            attached_version=version, attached_at=timezone.now(), b24_file_id=file_id
        )
        CallTransition.objects.create(
            call_id=recording.call_id,
            source=CallTransition.Source.BITRIX24,
            changes={"attached_version": [recording.attached_version, version]},
            description=f"Recording v{version} attached in Bitrix24 (file {file_id or '-'})",
        )


def recordings_expire(*, now: datetime | None = None) -> int:
    """Deletes the audio kept here once it is older than the tenant's retention (metadata stays)."""
    days = call_settings_get(fresh=True).retention_days
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    expired = 0
    for recording in CallRecording.objects.filter(uploaded_at__lt=cutoff, deleted_at__isnull=True):
        names = [f.name for f in (recording.original, recording.converted) if f.name]
        with transaction.atomic():
            updated = CallRecording.objects.filter(pk=recording.pk, deleted_at__isnull=True).update(
                deleted_at=timezone.now(), original="", converted=""
            )
            if not updated:
                continue
            CallTransition.objects.create(
                call_id=recording.call_id,
                source=CallTransition.Source.RECORDING,
                changes={"recording_deleted": [False, True]},
                description=f"Recording audio deleted after {days} days (retention)",
            )
            transaction.on_commit(partial(_files_delete, names))
        expired += 1
    return expired
