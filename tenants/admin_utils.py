"""Admin building blocks shared by the apps' admins."""

from __future__ import annotations

from typing import Any, ClassVar

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


class ObjectActionsAdmin(admin.ModelAdmin):
    """A change page with some of the list's actions as buttons for this one object
    (`object_actions`: action name, label). Each button posts the list's action for the object:
    the same permission checks, the same code."""

    change_form_template = "admin/simtrix/change_form_actions.html"
    object_actions: ClassVar[list[tuple[str, Any]]] = []

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        actions = self.object_actions if self.has_change_permission(request) else []
        extra = {**(extra_context or {}), "object_actions": actions}
        return super().change_view(request, object_id, form_url, extra)
