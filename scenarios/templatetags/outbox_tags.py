"""The admin home's "needs attention" box for the outbox (late and failed runs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.utils.translation import gettext
from django_tenants.utils import get_public_schema_name

from scenarios.selectors import runs_attention
from tenants.connection import tenant_connection

register = template.Library()


@register.filter(name="duration")
def duration_text(value: timedelta | None) -> str:
    """5 min 12 s, 2 h 5 min: how long something has waited, for people."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds < 3600:
        return gettext("%(minutes)s min %(seconds)s s") % {
            "minutes": seconds // 60,
            "seconds": seconds % 60,
        }
    return gettext("%(hours)s h %(minutes)s min") % {
        "hours": seconds // 3600,
        "minutes": seconds % 3600 // 60,
    }


@register.inclusion_tag("admin/scenarios/outbox_attention.html")
def outbox_attention() -> dict[str, Any]:
    if tenant_connection.schema_name == get_public_schema_name():
        return {"attention": None}
    return {"attention": runs_attention()}
