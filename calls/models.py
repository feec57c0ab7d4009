from __future__ import annotations

from django.db import models


class Device(models.Model):
    """A phone running the bridge app: one SIM line, carried by one Bitrix24 user."""

    name = models.CharField(max_length=100)
    phone_number = models.CharField(max_length=20, help_text="The SIM line number (E.164).")
    bitrix24_user_id = models.PositiveIntegerField(
        verbose_name="Bitrix24 user ID", help_text="The Bitrix24 user who carries this phone."
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters, to recognise it."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    app_version = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.phone_number})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
