from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest

from calls.models import Device
from calls.phones import InvalidPhoneNumber, phone_to_e164
from calls.services import device_register, device_revoke, device_rotate_token


def _tenant_country() -> str:
    return getattr(connection.tenant, "default_country", "PL")


class DeviceCreationForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ["name", "phone_number", "bitrix24_user_id"]

    def clean_phone_number(self) -> str:
        try:
            return phone_to_e164(self.cleaned_data["phone_number"], country=_tenant_country())
        except InvalidPhoneNumber as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "phone_number",
        "bitrix24_user_id",
        "token_hint",
        "active",
        "last_seen_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "phone_number"]
    readonly_fields = ["token_hint", "revoked_at", "last_seen_at", "app_version", "created_at"]
    actions = ["revoke_tokens", "rotate_tokens"]

    def get_form(self, request: HttpRequest, obj: Device | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DeviceCreationForm
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        device, token = device_register(
            name=obj.name,
            phone_number=obj.phone_number,
            bitrix24_user_id=obj.bitrix24_user_id,
            country=_tenant_country(),
        )
        obj.pk = device.pk
        obj.refresh_from_db()
        messages.warning(
            request,
            f"Token for {device.name}: {token} - copy it now, it will not be shown again.",
        )

    @admin.display(boolean=True, description="Active")
    def active(self, obj: Device) -> bool:
        return obj.is_active

    @admin.action(description="Revoke the token of the selected devices", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for device in queryset:
            device_revoke(device=device)
        messages.success(request, f"Revoked {queryset.count()} device token(s).")

    @admin.action(
        description="Issue a new token (the old one stops working)", permissions=["change"]
    )
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        for device in queryset:
            token = device_rotate_token(device=device)
            messages.warning(request, f"New token for {device.name}: {token} - shown only once.")
