from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users' second factors: in public for operators, in each tenant's schema for its admins."""

    name = "accounts"
    verbose_name = "Accounts"
