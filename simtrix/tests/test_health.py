"""/healthz and /readyz: on the public host and on tenant hosts, unauthenticated."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from scenarios import schedule
from tenants.models import Tenant, TenantSchedule

HOSTS = ["localhost", "alpha.localhost"]


@pytest.fixture
def heartbeat() -> Any:
    """Sets the dispatcher's last pass `age` seconds ago (None: never)."""

    def set_age(age: float | None) -> None:
        shared = caches["shared"]
        if age is None:
            shared.delete(schedule._HEARTBEAT)
        else:
            shared.set(schedule._HEARTBEAT, time.time() - age, timeout=None)

    yield set_age
    caches["shared"].delete(schedule._HEARTBEAT)


@pytest.mark.parametrize("host", HOSTS)
def test_healthz_answers_on_every_host(host: str, tenants: dict[str, Tenant], db: None) -> None:
    response = Client(HTTP_HOST=host).get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("host", HOSTS)
def test_readyz_is_ready_when_everything_answers_and_the_dispatcher_is_recent(
    host: str, tenants: dict[str, Tenant], db: None, heartbeat: Any
) -> None:
    heartbeat(0.5)
    response = Client(HTTP_HOST=host).get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == body["checks"]["redis"] == "ok"
    assert body["checks"]["dispatcher"]["status"] == "ok"
    assert body["checks"]["dispatcher"]["age_seconds"] < 5
    assert body["checks"]["outbox"] == {"late": 0, "oldest_late_seconds": None}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("age", [None, 120.0])
def test_readyz_fails_when_the_dispatcher_never_ran_or_stalled(
    host: str, age: float | None, tenants: dict[str, Tenant], db: None, heartbeat: Any
) -> None:
    heartbeat(age)
    response = Client(HTTP_HOST=host).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["dispatcher"]["status"] == "stale"
    assert body["checks"]["database"] == "ok"


@pytest.mark.parametrize("host", HOSTS)
def test_readyz_fails_when_redis_is_down(
    host: str, tenants: dict[str, Tenant], db: None, settings: Any
) -> None:
    down = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.CACHES = {
        name: {**config, "LOCATION": down} for name, config in settings.CACHES.items()
    }
    response = Client(HTTP_HOST=host).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["dispatcher"]["status"] == "stale"  # its heartbeat is kept in Redis
    assert "127.0.0.1:1" not in response.content.decode()  # nothing about the infrastructure


def test_readyz_reports_the_oldest_late_run(
    tenants: dict[str, Tenant], db: None, heartbeat: Any
) -> None:
    heartbeat(0.5)
    TenantSchedule.objects.filter(tenant=tenants["alpha"]).update(
        outbox_late=3, outbox_oldest_due_at=timezone.now() - timedelta(minutes=10)
    )
    response = Client(HTTP_HOST="localhost").get("/readyz")
    assert response.status_code == 200  # late work is reported; the web can still serve
    outbox = response.json()["checks"]["outbox"]
    assert outbox["late"] == 3
    assert 590 < outbox["oldest_late_seconds"] < 620


@pytest.mark.parametrize("host", HOSTS)
def test_readyz_stalled_reveals_nothing_but_the_checks(
    host: str, tenants: dict[str, Tenant], db: None, heartbeat: Any, settings: Any
) -> None:
    heartbeat(10 * settings.SIMTRIX_DISPATCHER_STALE_SECONDS)
    response = Client(HTTP_HOST=host).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"status", "checks"}
    assert set(body["checks"]) == {"database", "redis", "dispatcher", "outbox"}
    assert set(body["checks"]["dispatcher"]) == {"last_pass_at", "age_seconds", "stale", "status"}
    text = response.content.decode()
    for secret in (
        settings.DATABASES["default"]["NAME"],
        settings.DATABASES["default"].get("HOST") or "127.0.0.1",
        settings.CACHES["default"]["LOCATION"],
        settings.SECRET_KEY,
        "alpha",
        "Traceback",
    ):
        assert secret not in text


@pytest.mark.parametrize("host", HOSTS)
def test_probes_are_not_cached_and_carry_a_request_id(
    host: str, tenants: dict[str, Tenant], db: None
) -> None:
    response = Client(HTTP_HOST=host).get("/healthz")
    assert "no-cache" in response["Cache-Control"]
    assert len(response["X-Request-ID"]) == 32


def test_probes_are_get_only(tenants: dict[str, Tenant], db: None) -> None:
    assert Client(HTTP_HOST="localhost").post("/readyz").status_code == 405


def test_beats_health_check_passes_only_while_the_dispatcher_runs(
    tenants: dict[str, Tenant], db: None, heartbeat: Any
) -> None:
    heartbeat(0.5)
    out = io.StringIO()
    call_command("dispatcher_alive", stdout=out)
    assert json.loads(out.getvalue())["stale"] is False
    for age in (None, 120.0):
        heartbeat(age)
        with pytest.raises(CommandError, match="the dispatcher"):
            call_command("dispatcher_alive", stdout=io.StringIO())
