from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.utils.translation import gettext_lazy as _


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = _("Tenants")


class TenantAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, whose default site (a tenant's admin.site) asks for the second
    factor: Django's documented way to replace the class of `admin.site`. Listed by its path in
    INSTALLED_APPS; never chosen for the `tenants` entry itself (default = False)."""

    default = False
    default_site = "tenants.twofactor.TenantAdminSite"
