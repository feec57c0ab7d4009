"""Celery entry points of the SMS app (they run in the schema that queued them)."""

from __future__ import annotations

from celery import shared_task

from sms.sync import sms_sync


@shared_task(name="sms.sync", acks_late=True, ignore_result=True, soft_time_limit=90)
def sms_sync_task(sms_pk: int) -> str:
    """An SMS's Bitrix24 follow-up: the provider's status, a timeline comment, a notification."""
    return sms_sync(sms_pk)
