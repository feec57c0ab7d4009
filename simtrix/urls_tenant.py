"""URLs of a tenant host: the tenant's admin and the bridge API."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.language import set_language
from simtrix.health import healthz, readyz
from simtrix.metrics import metrics

admin.site.site_header = "SIMtrix"
admin.site.site_title = "SIMtrix"
admin.site.index_title = _("Calls, scenarios and Bitrix24")
# The home page opens with what needs someone (late or failed background work).
admin.site.index_template = "admin/tenant_index.html"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    # The language switcher's POST: for this browser and, logged in, for the user.
    path("i18n/setlang/", set_language, name="set_language"),
    path("admin/", admin.site.urls),
    path("api/bridge/v1/", include("calls.api.urls")),
    path("bitrix24/", include("crm.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline one.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
