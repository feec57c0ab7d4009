from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = _("SMS")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The provider's event handler, the command hook and the dispatcher's visit register.
        from sms import provider, services, sync  # noqa: F401, PLC0415 — models load after the registry
