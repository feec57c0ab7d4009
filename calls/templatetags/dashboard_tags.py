"""The tenant admin's home: at a glance, or the onboarding checklist (calls.dashboard)."""

from __future__ import annotations

from typing import Any

from django import template
from django_tenants.utils import get_public_schema_name

from calls.dashboard import tenant_dashboard
from tenants.connection import tenant_connection

register = template.Library()


@register.inclusion_tag("admin/calls/dashboard.html")
def tenant_glance() -> dict[str, Any]:
    if tenant_connection.schema_name == get_public_schema_name():
        return {"board": None}
    return {"board": tenant_dashboard()}
