"""Late and failed background work, as a tenant admin sees it: home, runs list, call page; and
the scheduler kept out of the tenant admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.models import Device
from scenarios.models import ActionRun
from scenarios.outbox import run_plan
from scenarios.tests.conftest import call_make
from tenants.models import Tenant


@pytest.fixture
def admin(alpha: Tenant) -> Client:
    User.objects.create_superuser("alpha-admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost")
    assert client.login(username="alpha-admin", password="pw")
    return client


def _run(device: Device, key: str, *, due_minutes_ago: float, status: str = "scheduled") -> int:
    call = call_make(device, call_id=key)
    run = run_plan(
        call_id=call.pk,
        action_type="notify",
        dedupe_key=key,
        due_at=timezone.now() + timedelta(hours=1),
        label=f"Step {key}",
    )
    ActionRun.objects.filter(pk=run.pk).update(
        due_at=timezone.now() - timedelta(minutes=due_minutes_ago), status=status
    )
    return call.pk


def test_the_home_page_says_how_many_runs_are_late_and_failed_and_links_to_them(
    admin: Client, device: Device
) -> None:
    _run(device, "late-1", due_minutes_ago=12)
    _run(device, "late-2", due_minutes_ago=3)
    _run(device, "recent", due_minutes_ago=0.5)  # due, but not late yet
    _run(device, "broken", due_minutes_ago=60, status="failed")
    page = admin.get("/admin/").content.decode()
    assert "Background work needs attention" in page
    assert "2 runs late" in page
    assert "the oldest for 12 min" in page
    assert "1 run failed" in page
    assert "/admin/scenarios/actionrun/?late=yes" in page
    assert "/admin/scenarios/actionrun/?status__exact=failed" in page


def test_a_tenant_with_nothing_late_sees_no_alarm(admin: Client, device: Device) -> None:
    _run(device, "recent", due_minutes_ago=0.5)
    assert "needs attention" not in admin.get("/admin/").content.decode()


def test_the_runs_list_flags_late_runs_and_filters_them(admin: Client, device: Device) -> None:
    _run(device, "late-1", due_minutes_ago=12)
    _run(device, "recent", due_minutes_ago=0.5)
    page = admin.get("/admin/scenarios/actionrun/").content.decode()
    assert "1 run(s) are late" in page
    assert page.count("late by 12 min") == 1
    late_only = admin.get("/admin/scenarios/actionrun/?late=yes").content.decode()
    assert "Step late-1" in late_only
    assert "Step recent" not in late_only


def test_the_call_page_says_a_run_is_late(admin: Client, device: Device) -> None:
    call_pk = _run(device, "late-1", due_minutes_ago=12)
    page = admin.get(f"/admin/calls/call/{call_pk}/change/").content.decode()
    assert "late: due 12" in page
    assert "not started" in page


def test_the_scheduler_is_not_in_the_tenant_admin(admin: Client) -> None:
    home = admin.get("/admin/").content.decode()
    for name in ("Periodic tasks", "Crontabs", "Clocked", "Solar events", "Intervals"):
        assert name not in home
    assert admin.get("/admin/django_celery_beat/periodictask/").status_code == 404


def test_operators_keep_the_scheduler_in_their_admin(tenants: dict[str, Tenant], db: None) -> None:
    User.objects.create_superuser("operator", password="pw")
    client = Client(HTTP_HOST="localhost")
    assert client.login(username="operator", password="pw")
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 200
    assert "Periodic tasks" in client.get("/admin/").content.decode()
