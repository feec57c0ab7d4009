"""The operators' admin, served only on the public host (localhost)."""

from __future__ import annotations

import logging
from typing import Any

import django_celery_beat.admin  # noqa: F401 — registers its models on admin.site, to move them
from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin
from axes.models import AccessAttempt, AccessFailureLog
from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.admin import TotpDeviceAdmin
from accounts.models import TotpDevice
from tenants.models import Domain, Tenant
from tenants.services import (
    ProvisioningError,
    TenantSpec,
    tenant_provision,
    tenant_spec_validate,
)
from tenants.twofactor import TwoFactorAdminSite

logger = logging.getLogger(__name__)


class PublicAdminSite(TwoFactorAdminSite):
    site_header = _("SIMtrix operators")
    site_title = _("SIMtrix operators")
    index_title = _("Tenants")

    def second_factor_required(self, request: HttpRequest) -> bool:
        return settings.SIMTRIX_REQUIRE_OPERATOR_2FA


public_site = PublicAdminSite(name="public_admin")


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


class TenantCreationForm(forms.ModelForm):
    domain = forms.CharField(
        label=_("Domain"),
        help_text=_("Host name the tenant is served at, e.g. acme.simtrix.example."),
    )
    bitrix24_webhook = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label=_("Bitrix24 webhook URL"),
        help_text=_("https://PORTAL/rest/USER_ID/SECRET/ - never shown again after saving."),
    )

    class Meta:
        model = Tenant
        fields = [
            "name",
            "schema_name",
            "timezone",
            "default_country",
            "language",
            "require_two_factor",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        if self.errors:
            return cleaned
        self.spec = TenantSpec(
            schema=cleaned["schema_name"],
            name=cleaned["name"],
            domain=cleaned["domain"].lower(),
            bitrix24_webhook=cleaned.get("bitrix24_webhook", ""),
            timezone=cleaned["timezone"],
            country=cleaned["default_country"].upper(),
            language=cleaned.get("language") or "en",
        )
        # The same checks as provision_tenant, shown on the form instead of failing the save.
        try:
            tenant_spec_validate(self.spec)
        except ProvisioningError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned

    def validate_unique(self) -> None:
        # Uniqueness of schema and domain is checked by the provisioning service.
        pass


@admin.register(Tenant, site=public_site)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "schema_name",
        "primary_domain",
        "timezone",
        "is_active",
        "require_two_factor",
        "created_at",
    ]
    list_filter = ["is_active", "require_two_factor"]
    search_fields = ["name", "schema_name", "domains__domain"]

    def get_form(
        self, request: HttpRequest, obj: Tenant | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = TenantCreationForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(
        self, request: HttpRequest, obj: Tenant | None = None
    ) -> list[str | list[str] | tuple[str, ...]]:
        if obj is None:
            return [
                "name",
                "schema_name",
                "domain",
                "timezone",
                "default_country",
                "language",
                "require_two_factor",
                "bitrix24_webhook",
            ]
        return [
            "name",
            "schema_name",
            "timezone",
            "default_country",
            "language",
            "is_active",
            "require_two_factor",
            "created_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        return ["schema_name", "created_at"] if obj else []

    def get_inlines(self, request: HttpRequest, obj: Tenant | None) -> list[type]:
        return [DomainInline] if obj else []

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = tenant_provision(form.spec)
        if form.cleaned_data.get("require_two_factor"):
            created.require_two_factor = True
            created.save(update_fields=["require_two_factor"])
        obj.pk = created.pk
        obj.refresh_from_db()
        messages.success(
            request,
            gettext("Tenant %(name)s provisioned at %(domain)s.")
            % {"name": created.name, "domain": form.spec.domain},
        )

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        # Deleting a tenant drops a schema full of call history: deactivate instead.
        return False

    @admin.display(description=_("Domain"))
    def primary_domain(self, obj: Tenant) -> str:
        domain = obj.get_primary_domain()
        return domain.domain if domain else ""


@admin.register(Domain, site=public_site)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "tenant", "is_primary"]
    search_fields = ["domain", "tenant__name"]


public_site.register(User, UserAdmin)
public_site.register(Group, GroupAdmin)
# Operators' own authenticator apps: removing one lets an operator who lost a phone enrol again.
# (A tenant's devices are in its schema, on its own admin: accounts.admin registers them there.)
public_site.register(TotpDevice, TotpDeviceAdmin)


# --- Login lockouts of every admin (tenants.logins): seen and lifted here ------------------


@admin.register(AccessAttempt, site=public_site)
class LoginLockoutAdmin(AccessAttemptAdmin):
    """Failed logins being counted, per user and address, of every tenant's admins and of the
    operators; the user is "<schema>:<username>". A row at the limit is a lockout."""

    actions = ["lift_lockout", "cleanup_expired_attempts"]

    @admin.action(description=_("Lift the lockout (forget these failed logins)"))
    def lift_lockout(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        rows = sorted({(row.username, row.ip_address) for row in queryset}, key=str)
        queryset.delete()
        logger.info(
            "login lockout lifted by %s: %s",
            request.user,
            ", ".join(f"{user} from {address}" for user, address in rows),
        )
        lifted = ", ".join(
            gettext("%(user)s from %(address)s") % {"user": user, "address": address}
            for user, address in rows
        )
        self.message_user(
            request, gettext("Lockout lifted: %(logins)s may log in again.") % {"logins": lifted}
        )


@admin.register(AccessFailureLog, site=public_site)
class LoginFailureLogAdmin(AccessFailureLogAdmin):
    """Every failed login, kept after a lockout is lifted or has expired."""


def _scheduler_admin_to_operators() -> None:
    """Beat's models live in public only and are edited here, never in a tenant's admin: a
    header stored there once ran a job in another tenant's schema, and a clashing name stopped
    beat for every tenant."""

    for model in apps.get_app_config("django_celery_beat").get_models():
        if admin.site.is_registered(model):
            model_admin = admin.site.get_model_admin(model)
            admin.site.unregister(model)
            public_site.register(model, type(model_admin))


_scheduler_admin_to_operators()
