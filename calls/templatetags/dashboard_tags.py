"""The tenant admin's home: at a glance, or the onboarding checklist (calls.dashboard)."""

from __future__ import annotations

from typing import Any

from django import template
from django_tenants.utils import get_public_schema_name

from calls.dashboard import tenant_dashboard
from tenants.connection import tenant_connection

register = template.Library()


@register.inclusion_tag("admin/calls/dashboard.html", takes_context=True)
def tenant_glance(context: template.Context) -> dict[str, Any]:
    if tenant_connection.schema_name == get_public_schema_name():
        return {"board": None}
    request = context.get("request")
    user = getattr(request, "user", None)
    reports = bool(user and user.has_perm("reports.view_notreturnedreport"))
    return {"board": tenant_dashboard(reports=reports)}
