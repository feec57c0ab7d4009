"""TOTP devices on a tenant's admin (and, through tenants.admin, on the operators').

What an admin does here: remove the device of a colleague who lost a phone (the colleague then
logs in with the password alone and enrols again), or lift a device's wrong-code delay. The key
is never shown, in no form (not even as a QR code): whoever could read it could compute every
code. A device is only ever added by its user, on "Two-factor authentication".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.models import TotpDevice


class TotpDeviceAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_at", "last_used_at", "confirmed"]
    list_filter = ["created_at", "last_used_at", "confirmed"]
    search_fields = ["user__username", "name"]
    list_select_related = ["user"]
    fieldsets = [
        (_("Identity"), {"fields": ["user", "name", "confirmed"]}),
        (_("Timestamps"), {"fields": ["created_at", "last_used_at"]}),
        (_("Configuration"), {"fields": ["step", "t0", "digits", "tolerance"]}),
        (_("State"), {"fields": ["drift"]}),
        (_("Throttling"), {"fields": ["throttling_failure_timestamp", "throttling_failure_count"]}),
    ]
    readonly_fields = [
        "user",
        "created_at",
        "last_used_at",
        "step",
        "t0",
        "digits",
        "tolerance",
        "drift",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The key must reach the user's app (the enrolment page's QR code), never an admin's.
        return False


admin.site.register(TotpDevice, TotpDeviceAdmin)
