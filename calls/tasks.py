from __future__ import annotations

from celery import shared_task

from calls import recordings
from calls.audio import ConversionFailed
from tenants.fanout import in_tenant_schema, tenants_each


@shared_task(
    name="calls.recording_convert",
    ignore_result=True,
    autoretry_for=(OSError,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=600,
    time_limit=660,
)
def recording_convert_task(recording_id: int, version: int) -> bool:
    # A failed conversion is kept on the recording; attach_recording reports it for good.

    try:
        return recordings.recording_convert(recording_id=recording_id, version=version)
    except ConversionFailed:
        return False


@shared_task(name="calls.recordings_expire", ignore_result=True, expires=3000)
def recordings_expire_task() -> int:
    if not in_tenant_schema("calls.recordings_expire"):
        return 0
    return recordings.recordings_expire()


@shared_task(name="calls.recordings_expire_all", ignore_result=True, expires=1800)
def recordings_expire_all_task() -> int:
    """Hourly, in public: the retention, queued once for every active tenant."""
    return tenants_each(recordings_expire_task)
