from __future__ import annotations

from django.db import models

from crm.validators import mask_webhook_url, validate_webhook_url


class Bitrix24Connection(models.Model):
    """How this tenant reaches its Bitrix24 portal. Exactly one row per tenant schema."""

    class AuthMode(models.TextChoices):
        WEBHOOK = "webhook", "Inbound webhook"
        OAUTH = "oauth", "Local OAuth application"

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    auth_mode = models.CharField(max_length=16, choices=AuthMode, default=AuthMode.WEBHOOK)
    webhook_url = models.CharField(
        max_length=500, blank=True, validators=[validate_webhook_url], verbose_name="webhook URL"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Bitrix24 connection"
        constraints = [
            models.CheckConstraint(condition=models.Q(singleton=1), name="crm_connection_singleton")
        ]

    def __str__(self) -> str:
        return self.webhook_url_masked or "Bitrix24 connection (not configured)"

    @property
    def webhook_url_masked(self) -> str:
        return mask_webhook_url(self.webhook_url) if self.webhook_url else ""
