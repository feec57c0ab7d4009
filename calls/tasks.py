from __future__ import annotations

from celery import shared_task

from calls import services


@shared_task(name="calls.device_mark_seen")
def device_mark_seen_task(device_id: int, app_version: str, seen_at: str | None = None) -> int:
    return services.device_mark_seen(device_id=device_id, app_version=app_version, seen_at=seen_at)
