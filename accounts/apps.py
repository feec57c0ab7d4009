from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    """Users' second factors: in public for operators, in each tenant's schema for its admins."""

    name = "accounts"
    verbose_name = _("Accounts")

    def ready(self) -> None:
        # The login signal that carries a user's language into the session.
        from accounts import language  # noqa: F401, PLC0415
