"""The Celery app: tenant-aware, so a task runs in the schema of the tenant that queued it."""

from __future__ import annotations

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simtrix.settings")

app = CeleryApp("simtrix")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
