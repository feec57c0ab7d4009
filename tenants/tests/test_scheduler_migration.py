"""The upgrade to the public scheduler index (tenants 0002): existing tenants get their
schedule row and one visit, and beat's leftovers that a tenant could write are removed."""

from __future__ import annotations

import importlib

from django.apps import apps
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scenarios.models import RoutingSettings
from tenants.connection import tenant_connection
from tenants.models import OutboxWake, Tenant, TenantSchedule

migration = importlib.import_module("tenants.migrations.0002_scheduler_index")


def _tables(schema: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            [schema, "django_celery_beat%"],
        )
        return [row[0] for row in cursor.fetchall()]


def test_existing_tenants_get_their_schedule_and_a_visit_and_keep_the_work_day_refresh(
    tenants: dict[str, Tenant], db: None
) -> None:
    TenantSchedule.objects.all().delete()
    OutboxWake.objects.all().delete()
    tenant_connection.set_schema("alpha")
    RoutingSettings.objects.update_or_create(singleton=1, defaults={"use_timeman": True})
    TenantSchedule.objects.all().delete()  # as before the upgrade
    tenant_connection.set_schema_to_public()
    with connection.schema_editor() as editor:
        migration.index_existing_tenants(apps, editor)
    alpha, beta = tenants["alpha"], tenants["beta"]
    assert TenantSchedule.objects.get(tenant=alpha).availability_refresh is True
    assert TenantSchedule.objects.get(tenant=beta).availability_refresh is False
    assert OutboxWake.objects.filter(tenant=alpha).count() == 1
    assert OutboxWake.objects.filter(tenant=beta).count() == 1


def test_beats_tables_in_tenant_schemas_and_the_fan_out_entries_are_removed(
    tenants: dict[str, Tenant], db: None
) -> None:
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE "alpha".django_celery_beat_periodictask (id int)')
        cursor.execute(
            'INSERT INTO "alpha".django_migrations (app, name, applied) '
            "VALUES ('django_celery_beat', '0001_initial', now())"
        )
    every = IntervalSchedule.objects.create(every=1, period="seconds")
    PeriodicTask.objects.create(
        name="dispatch-due-actions@__all_tenants_only__", task="scenarios.dispatch_due",
        interval=every,
    )  # fmt: skip
    kept = PeriodicTask.objects.create(name="an operator's job", task="x.y", interval=every)
    with connection.schema_editor() as editor:
        migration.drop_tenant_schedules(apps, editor)
        migration.drop_fan_out_entries(apps, editor)
    assert _tables("alpha") == []
    assert _tables("public")  # the operators' schedule stays
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM alpha.django_migrations WHERE app = 'django_celery_beat'"
        )
        assert cursor.fetchone()[0] == 0
    assert list(PeriodicTask.objects.values_list("pk", flat=True)) == [kept.pk]
