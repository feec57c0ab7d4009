"""The login lockout (django-axes) of both admins, made for tenants.

Users of different tenants live in different schemas and may share a username, while axes keeps
its attempts in one table, in public (a tenant's search_path falls back to it). So the name axes
counts is qualified by the schema of the host the login came to: "alpha:admin" and
"beta:admin" are locked apart, and operators see and lift every lockout in one place (the
operators' admin, tenants/admin.py).
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.conf import settings  # Django's, with axes' defaults filled in
from django.contrib import admin
from django.contrib.admin.sites import AdminSite, all_sites
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext

from tenants.connection import tenant_connection


def login_schema(request: HttpRequest | None) -> str:
    """The schema whose users the login is checked against: the host's tenant."""

    tenant = getattr(request, "tenant", None)
    return getattr(tenant, "schema_name", None) or tenant_connection.schema_name


def axes_username(request: HttpRequest | None, credentials: dict[str, Any] | None) -> str | None:
    """AXES_USERNAME_CALLABLE: "<schema>:<username>", or None when no username was given."""

    field = settings.AXES_USERNAME_FORM_FIELD
    if credentials is not None:
        username = credentials.get(field)
    else:
        username = request.POST.get(field) if request is not None else None
    if not username:
        return None
    return f"{login_schema(request)}:{username}"


class LockoutBackend(AxesStandaloneBackend):
    """Refuses a locked-out user before the password is checked.

    An authentication without a request is no login over the web (the test client's `login()`,
    a shell): there is no address to lock, so it is not counted, where axes would raise.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def _admin_site(request: HttpRequest) -> AdminSite:
    match = getattr(request, "resolver_match", None)
    namespace = match.namespace if match is not None else ""
    for site in all_sites:
        if site.name == namespace:
            return site
    return admin.site


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the locked-out page, in the look of the admin it came from."""

    site = _admin_site(request)
    cooloff = settings.AXES_COOLOFF_TIME
    minutes = round(cooloff * 60) if cooloff else None  # None: until an operator lifts it
    context = {
        **site.each_context(request),
        "title": gettext("Too many failed logins"),
        "cooloff_minutes": minutes,
        "operators_site": site.name != admin.site.name,
    }
    response = TemplateResponse(
        request, "admin/locked_out.html", context, status=settings.AXES_HTTP_RESPONSE_CODE
    )
    return response.render()
