from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _

from crm.signals import directory_synced


class ScenariosConfig(AppConfig):
    name = "scenarios"
    verbose_name = _("Scenarios")

    def ready(self) -> None:
        # Registers the handlers of the scenario action types with the outbox.
        # App loading: these import models, so only once the registry is ready.
        from scenarios import callbacks, crm_actions, handlers, webhooks  # noqa: F401, PLC0415
        from scenarios.models import RoutingSettings  # noqa: PLC0415
        from scenarios.routing.services import (  # noqa: PLC0415
            routing_on_directory_synced,
            routing_settings_forget,
        )
        from scenarios.schedule import schedule_on_routing_settings_saved  # noqa: PLC0415

        # Rules naming what Bitrix24 no longer has are marked broken after every sync.
        directory_synced.connect(routing_on_directory_synced, dispatch_uid="scenarios-routing")
        for signal in (post_save, post_delete):
            signal.connect(
                routing_settings_forget, sender=RoutingSettings, dispatch_uid="routing-settings"
            )
        # Beat reads from public which tenants want the work-day refresh every minute.
        post_save.connect(
            schedule_on_routing_settings_saved,
            sender=RoutingSettings,
            dispatch_uid="routing-settings-schedule",
        )
