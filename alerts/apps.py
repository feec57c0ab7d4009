from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_save
from django.utils.translation import gettext_lazy as _


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = _("Alerts")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # App loading: these import models, so only once the registry is ready.
        from alerts.models import AlertSettings  # noqa: PLC0415
        from alerts.services import alerts_schedule_on_settings_saved  # noqa: PLC0415

        # The minute's fan-out reads from public which tenants have alerts on.
        post_save.connect(
            alerts_schedule_on_settings_saved,
            sender=AlertSettings,
            dispatch_uid="alerts-settings-schedule",
        )
