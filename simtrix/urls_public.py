"""URLs of the public host (localhost): the operators' admin."""

from __future__ import annotations

from django.urls import include, path
from django.views.generic import RedirectView

from simtrix.health import healthz, readyz
from simtrix.metrics import metrics
from tenants.admin import public_site

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    # The language switcher's POST (django.views.i18n.set_language).
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", public_site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
