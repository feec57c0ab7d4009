"""Form fields shared by the scenario and routing admins."""

from __future__ import annotations

import json
from typing import Any

from django import forms


class UserIdsField(forms.CharField):
    """Bitrix24 user ids typed as "5, 9, 11" (order kept: a queue's order matters).

    Stored as a JSON list of ints.
    """

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(str(user) for user in value)
        if isinstance(value, str) and value.startswith("["):
            try:
                return ", ".join(str(user) for user in json.loads(value))
            except ValueError:
                return value
        return value or ""

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]  # typed as text, cleaned to ids
        text = super().to_python(value) or ""
        users = []
        for part in text.replace(";", ",").replace(" ", ",").split(","):
            if not part:
                continue
            if not part.isdigit() or int(part) <= 0:
                raise forms.ValidationError(f"{part!r} is not a Bitrix24 user id.")
            users.append(int(part))
        return list(dict.fromkeys(users))
