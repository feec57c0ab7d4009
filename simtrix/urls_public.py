"""URLs of the public host (localhost): the operators' admin."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from accounts.language import set_language
from simtrix.health import healthz, readyz
from simtrix.metrics import metrics
from tenants.admin import public_site

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    # The language switcher's POST: for this browser and, logged in, for the user.
    path("i18n/setlang/", set_language, name="set_language"),
    path("admin/", public_site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
