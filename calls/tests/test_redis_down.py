"""Redis down: the bridge's events are still stored and answered, nothing is lost.

Redis is the broker, the cache, the throttles' counter and the Bitrix24 rate limiter; none of
that may cost a phone's event. The URL points at a port nothing listens on: every Redis
command fails at once, as when Redis is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from pytest_django import Settings

from calls.models import Call, CallEvent, Device
from calls.tests.conftest import Bridge, ended, started
from crm.redis_client import get_redis
from scenarios.models import ActionRun
from tenants.models import OutboxWake

GONE = "redis://127.0.0.1:1/0"


def _celery_broker(url: str) -> None:
    from simtrix.celery import app

    app.conf.broker_url = url
    # Both pools are made on first use from the URL of then.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def redis_gone(settings: Settings) -> Iterator[None]:
    url, caches = django_settings.REDIS_URL, django_settings.CACHES
    settings.REDIS_URL = GONE
    settings.CACHES = {
        name: {**conf, "LOCATION": GONE} for name, conf in django_settings.CACHES.items()
    }
    get_redis.cache_clear()
    _celery_broker(GONE)
    yield
    # Back before the other fixtures' teardowns, which use Redis.
    settings.REDIS_URL = url
    settings.CACHES = caches
    _celery_broker(django_settings.CELERY_BROKER_URL)
    get_redis.cache_clear()


def test_a_call_reported_while_redis_is_down_is_stored_and_its_actions_planned(
    alpha_portal: Any,
    bridge: Bridge,
    device: Device,
    redis_gone: None,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first = bridge.send(started("rd-1", phone_number="+48600111222"))
        second = bridge.send(ended("rd-1", outcome="missed", duration_seconds=0))
    assert first.status_code == 201
    assert second.status_code == 200
    call = Call.objects.get(call_id="rd-1")
    assert CallEvent.objects.filter(call=call).count() == 2
    assert call.outcome == Call.Outcome.MISSED
    # The runs could not be queued: their wake has the dispatcher send them when Redis is back.
    runs = ActionRun.objects.filter(call=call)
    assert runs.exists()
    assert not runs.exclude(status=ActionRun.Status.SCHEDULED).exists()
    assert OutboxWake.objects.exists()


def test_a_lookup_while_redis_is_down_answers(
    alpha_portal: Any, bridge: Bridge, device: Device, redis_gone: None
) -> None:
    response = bridge.post("lookup/", {"phone_number": "+48600111222"})
    assert response.status_code == 200
    body = response.json()
    assert body["phone_number"] == "+48600111222"
    # Bitrix24 not asked (its request budget lives in Redis): the phone still gets a route.
    assert body["crm"]["status"] == "unavailable"
    assert body["route"]["user"]["id"] == device.bitrix24_user_id


def test_a_wrong_token_while_redis_is_down_is_still_401(device: Device, redis_gone: None) -> None:
    assert Bridge("stx_wrong").get("ping/").status_code == 401
