"""Two-factor logins (TOTP, django-otp) on both admins: a tenant's and the operators'.

Turned on per user: anyone can enrol an authenticator app on "Two-factor authentication" (in the
admin's user links), and from then on the login asks for its code next to the password. It can be
required: for every admin of a tenant (the operators tick `Tenant.require_two_factor`), and for
every operator (`SIMTRIX_REQUIRE_OPERATOR_2FA`). A user who must and has no device yet is sent to
enrol before anything else; a session that has not passed the code of an enrolled device is
treated as not logged in. Devices live next to their users, in the schema of the host, their
keys encrypted (accounts.models.TotpDevice).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from functools import update_wrapper
from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.translation import gettext, gettext_lazy
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user
from django_otp import login as otp_login
from django_otp.oath import TOTP
from django_otp.util import random_hex

from accounts.models import TotpDevice
from tenants.admin_utils import qr_svg

# The key of an enrolment in progress: in the session until the first code proves the app has
# it, so an abandoned enrolment leaves no device behind.
PENDING_KEY_SESSION_KEY = "simtrix_totp_pending_key"
DEVICE_NAME = "Authenticator app"

_View = TypeVar("_View", bound=Callable[..., HttpResponseBase])


def user_is_verified(user: Any) -> bool:
    """The session passed a device's code (set by django_otp's OTPMiddleware)."""

    return getattr(user, "otp_device", None) is not None


def user_has_device(user: Any) -> bool:
    """The user has enrolled an authenticator app (cached on the user for the request)."""

    if not user.is_authenticated:
        return False
    cached = getattr(user, "_simtrix_has_device", None)
    if cached is None:
        cached = next(devices_for_user(user), None) is not None
        user._simtrix_has_device = cached
    return cached


def _token_digits(token: str) -> int | None:
    token = token.replace(" ", "").strip()
    return int(token) if token.isascii() and token.isdigit() and len(token) <= 10 else None


class TwoFactorLoginForm(AdminAuthenticationForm):
    """The admin's login: the password, then the app's code for a user who has enrolled one."""

    otp_token = forms.CharField(
        required=False,
        max_length=16,
        label=gettext_lazy("Two-factor code"),
        help_text=gettext_lazy(
            "From your authenticator app; leave empty if you have not set one up."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        # One message whether the password or the code was wrong (or missing, or spent, or
        # django-otp delays the next try): a different one for a wrong code would tell whoever
        # guesses that the password was right.
        "invalid_login": gettext_lazy(
            "Please enter the correct %(username)s and password for a staff account, and the "
            "current code of your authenticator app if you have set one up. Note that both "
            "fields may be case-sensitive; after a wrong code, wait a little before the next try."
        ),
    }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # the password first: a wrong one never reaches the code
        user = self.get_user()
        if user is not None and user_has_device(user):
            device = self._verified_device(user, cleaned.get("otp_token") or "")
            if device is None:
                # A failed login like a wrong password's (which `authenticate` reports itself),
                # so the lockout (django-axes' receiver) counts wrong codes too.
                user_login_failed.send(
                    sender=__name__,
                    credentials={"username": cleaned.get("username")},
                    request=self.request,
                )
                raise self.get_invalid_login_error()
            # Stored in the session by django_otp's user_logged_in receiver.
            user.otp_device = device  # type: ignore[attr-defined]
        return cleaned

    def _verified_device(self, user: AbstractBaseUser, token: str) -> TotpDevice | None:
        """The device that accepts ``token`` now, or None."""
        token = token.replace(" ", "")
        if not token:
            return None
        # Rows locked, so two concurrent logins cannot both spend the same code; a wrong code's
        # throttling (django-otp: a growing delay) is committed even though the login fails.
        with transaction.atomic():
            for device in devices_for_user(user, for_verify=True):
                allowed, _ = device.verify_is_allowed()
                if allowed and device.verify_token(token):
                    return device
        return None


class EnrolForm(forms.Form):
    otp_token = forms.CharField(
        max_length=16,
        label=gettext_lazy("Code from the app"),
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


def totp_uri(*, user: AbstractBaseUser, key_hex: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps read from the QR code (of a device not saved yet:
    the key stays in the session until the first code)."""

    return TotpDevice(user=user, key=key_hex).config_url_for(issuer)


def totp_device_enrol(*, user: AbstractBaseUser, key_hex: str, token: str) -> TotpDevice | None:
    """The user's new device, once `token` shows the app holds `key_hex`; None otherwise."""

    digits = _token_digits(token)
    if digits is None:
        return None
    totp = TOTP(binascii.unhexlify(key_hex))
    totp.time = time.time()
    if not totp.verify(digits, tolerance=1):
        return None
    # last_t: the code just used cannot log in a second time.
    return TotpDevice.objects.create(
        user=user, name=DEVICE_NAME, key=key_hex, confirmed=True, last_t=totp.t(), drift=0
    )


class TwoFactorAdminSite(admin.AdminSite):
    """An admin site whose login takes a second factor, and which can require one."""

    login_form = TwoFactorLoginForm
    login_template = "admin/two_factor/login.html"

    def second_factor_required(self, request: HttpRequest) -> bool:
        return False

    def totp_issuer(self, request: HttpRequest) -> str:
        # What the authenticator app shows: the host tells a user's accounts at two tenants apart.
        return f"SIMtrix {request.get_host().split(':')[0]}"

    def has_permission(self, request: HttpRequest) -> bool:
        """Staff whose session passed the code of their device, if they have one."""

        if not super().has_permission(request):
            return False
        return user_is_verified(request.user) or not user_has_device(request.user)

    def must_enrol(self, request: HttpRequest) -> bool:
        user = request.user
        return (
            user.is_active
            and user.is_staff
            and not user_is_verified(user)
            and self.second_factor_required(request)
            and not user_has_device(user)
        )

    def admin_view(self, view: _View, cacheable: bool = False) -> _View:
        """Django's check (staff, and the code passed), after sending a user who must enrol and
        has not to the enrolment page: every admin page (the password change too) but logging
        out and enrolling itself."""

        checked = super().admin_view(view, cacheable)
        if view in self._views_before_enrolment():
            return checked

        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if self.must_enrol(request):
                messages.warning(request, gettext("Set up two-factor authentication to continue."))
                return HttpResponseRedirect(reverse("admin:two_factor", current_app=self.name))
            return checked(request, *args, **kwargs)

        return cast(_View, update_wrapper(inner, view))

    def _views_before_enrolment(self) -> list[Callable[..., Any]]:
        # Not the password change: where a second factor is required, a password alone is half
        # a login, and half a login must not change what the other half is.
        return [self.logout, self.two_factor, self.i18n_javascript]

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [
            path("two-factor/", self.admin_view(self.two_factor), name="two_factor"),
            *super().get_urls(),
        ]

    def two_factor(self, request: HttpRequest) -> HttpResponse:
        """Enrol an authenticator app; or see the one enrolled and, unless required, remove it."""

        context = {
            **self.each_context(request),
            "title": gettext("Two-factor authentication"),
            "required": self.second_factor_required(request),
        }
        if user_has_device(request.user):
            return self._two_factor_enrolled(request, context)
        return self._two_factor_enrol(request, context)

    def _two_factor_enrol(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        key_hex = request.session.get(PENDING_KEY_SESSION_KEY)
        if not key_hex:
            key_hex = random_hex(20)
            request.session[PENDING_KEY_SESSION_KEY] = key_hex
        form = EnrolForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            device = totp_device_enrol(
                user=request.user,  # type: ignore[arg-type]
                key_hex=key_hex,
                token=form.cleaned_data["otp_token"],
            )
            if device is not None:
                del request.session[PENDING_KEY_SESSION_KEY]
                otp_login(request, device)  # this session has just passed the code
                messages.success(
                    request,
                    gettext("Two-factor authentication is on: every login now asks for a code."),
                )
                return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
            form.add_error(
                "otp_token",
                gettext("That code does not match: check the app's clock and try again."),
            )
        uri = totp_uri(
            user=request.user,  # type: ignore[arg-type]
            key_hex=key_hex,
            issuer=self.totp_issuer(request),
        )
        secret = base64.b32encode(binascii.unhexlify(key_hex)).decode().rstrip("=")
        context.update(
            {
                "form": form,
                "qr_svg": qr_svg(uri),
                # Grouped by four, as apps show it, for typing it in by hand.
                "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            }
        )
        request.current_app = self.name
        return TemplateResponse(request, "admin/two_factor/enrol.html", context)

    def _two_factor_enrolled(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        devices = list(devices_for_user(request.user))
        form = EnrolForm(request.POST if request.method == "POST" else None)
        if form.is_valid() and not context["required"]:
            token = form.cleaned_data["otp_token"].replace(" ", "")
            with transaction.atomic():
                device = next(devices_for_user(request.user, for_verify=True), None)
                verified = device is not None and device.verify_token(token)
            if verified:
                for each in devices:
                    each.delete()
                request.session.pop(DEVICE_ID_SESSION_KEY, None)
                messages.success(
                    request, gettext("Two-factor authentication is off for your account.")
                )
                return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
            form.add_error("otp_token", gettext("That code is not right: enter the current one."))
        context.update({"form": form, "devices": devices})
        request.current_app = self.name
        return TemplateResponse(request, "admin/two_factor/enrolled.html", context)


# The tenant admin's sections, by job: what a support person reads, what the tenant's admin
# sets up, the Bitrix24 directory as synced, and the machinery (superusers only). A model
# registered later and not named here lands in "Other" for superusers: nothing disappears.
ADMIN_SECTIONS: list[tuple[Any, bool, list[str]]] = [
    (
        gettext_lazy("Calls"),
        False,
        ["calls.Call", "sms.SmsMessage", "commands.Dial", "alerts.Incident"],
    ),
    (
        gettext_lazy("Reports"),
        False,
        [
            "reports.OverviewReport",
            "reports.MissedHoursReport",
            "reports.NotReturnedReport",
            "reports.CallbackReport",
            "reports.TeamReport",
        ],
    ),
    (
        gettext_lazy("Setup"),
        False,
        [
            "scenarios.Scenario",
            "scenarios.RoutingRule",
            "scenarios.RoutingSettings",
            "scenarios.OfficeHours",
            "scenarios.Holiday",
            "calls.Device",
            "calls.CallSettings",
            "sms.SmsSettings",
            "alerts.AlertSettings",
            "crm.Bitrix24Connection",
        ],
    ),
    (
        gettext_lazy("Bitrix24 directory"),
        False,
        [
            "crm.Bitrix24User",
            "crm.Department",
            "crm.Pipeline",
            "crm.Stage",
            "crm.LeadStatus",
            "crm.LeadSource",
            "crm.EntityField",
        ],
    ),
    (gettext_lazy("Users"), False, ["auth.User", "auth.Group", "accounts.TotpDevice"]),
    (
        gettext_lazy("System"),
        True,
        [
            "crm.RequestLog",
            "scenarios.ActionRun",
            "crm.InboundEvent",
            "commands.Command",
            "calls.CallEvent",
            "crm.Intent",
            "scenarios.RoundRobinCursor",
        ],
    ),
]


class TenantAdminSite(TwoFactorAdminSite):
    """A tenant's admin (`django.contrib.admin.site`, tenants.apps.TenantAdminConfig)."""

    def second_factor_required(self, request: HttpRequest) -> bool:
        return bool(getattr(getattr(request, "tenant", None), "require_two_factor", False))

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        """The home page and the sidebar by job (ADMIN_SECTIONS), not by Django app; an app's
        own page stays as Django lists it."""
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        models = {
            f"{app['app_label']}.{model['object_name']}": (app, model)
            for app in apps
            for model in app["models"]
        }
        sections = []
        placed: set[str] = set()
        superuser = bool(getattr(request.user, "is_superuser", False))
        for name, for_superusers, wanted in ADMIN_SECTIONS:
            placed.update(wanted)
            if for_superusers and not superuser:
                continue
            chosen = [models[key] for key in wanted if key in models]
            if chosen:
                sections.append(_section(name, chosen))
        rest = [entry for key, entry in models.items() if key not in placed]
        if rest and superuser:
            sections.append(_section(gettext_lazy("Other"), rest))
        return sections


def _section(name: Any, entries: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    first_app = entries[0][0]
    return {
        "name": name,
        # The first model's app: the section's heading links to that app's page.
        "app_label": first_app["app_label"],
        "app_url": first_app["app_url"],
        "has_module_perms": True,
        "models": [model for _, model in entries],
    }
