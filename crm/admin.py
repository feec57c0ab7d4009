from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from crm.models import Bitrix24Connection


class ConnectionForm(forms.ModelForm):
    new_webhook_url = forms.CharField(
        required=False,
        label="New webhook URL",
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored URL; it is never shown in clear after saving.",
    )

    class Meta:
        model = Bitrix24Connection
        fields = ["auth_mode"]

    def clean_new_webhook_url(self) -> str:
        value = self.cleaned_data["new_webhook_url"].strip()
        if value:
            Bitrix24Connection._meta.get_field("webhook_url").run_validators(value)
        return value

    def save(self, commit: bool = True) -> Bitrix24Connection:
        if self.cleaned_data.get("new_webhook_url"):
            url = self.cleaned_data["new_webhook_url"]
            self.instance.webhook_url = url if url.endswith("/") else f"{url}/"
        return super().save(commit)


@admin.register(Bitrix24Connection)
class Bitrix24ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ["__str__", "auth_mode", "updated_at"]
    readonly_fields = ["webhook_url_masked", "updated_at"]
    fields = ["auth_mode", "webhook_url_masked", "new_webhook_url", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Bitrix24Connection.objects.exists() and super().has_add_permission(request)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.fields
