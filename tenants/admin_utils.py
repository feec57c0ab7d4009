"""Admin building blocks shared by the apps' admins."""

from __future__ import annotations

from typing import Any

import qrcode
import qrcode.image.svg
from django.contrib import admin
from django.http import HttpRequest


def qr_svg(data: str) -> str:
    """`data` as a QR code, an inline SVG for an admin page (a device's setup, a TOTP key)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Audit and mirrored rows: visible, never added, changed or deleted through the admin.

    They change only through SIMtrix itself (the bridge, the outbox, the directory sync).
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
