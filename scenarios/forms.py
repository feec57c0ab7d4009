"""Form fields shared by the scenario and routing admins."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms

from crm.models import Bitrix24User

_ID_IN_TEXT = re.compile(r"#(\d+)")


class UserIdsField(forms.CharField):
    """Bitrix24 users, shown by name ("Marta Nowak (#5), Ewa Lewandowska (#9)") and typed by
    name or id ("Marta Nowak, 9"), order kept: a queue's order matters. Stored as a JSON list
    of ints. Once the directory is synced, a user Bitrix24 does not have, or has deactivated,
    is refused, and shown flagged until removed."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str) and value.startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        if isinstance(value, list):
            known = {user.id: user for user in Bitrix24User.objects.filter(pk__in=value)}
            return ", ".join(_label(user_id, known.get(user_id)) for user_id in value)
        return value or ""

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]  # typed as text, cleaned to ids
        text = super().to_python(value) or ""
        users: list[int] = []
        for part in (piece.strip() for piece in re.split(r"[,;\n]+", text)):
            if not part:
                continue
            if re.fullmatch(r"[\d\s]+", part):  # "5", or "5 9 11"
                users += [int(number) for number in part.split()]
                continue
            found = _ID_IN_TEXT.search(part)  # "Marta Nowak (#5)", as shown
            if found:
                users.append(int(found.group(1)))
                continue
            matches = list(
                Bitrix24User.objects.filter(name__iexact=part).values_list("id", flat=True)
            )
            if len(matches) != 1:
                problem = (
                    "several users have that name, use the id"
                    if matches
                    else ("nor a Bitrix24 user's name")
                )
                raise forms.ValidationError(f"{part!r} is not a Bitrix24 user id, {problem}.")
            users.append(matches[0])
        users = list(dict.fromkeys(users))
        if any(user <= 0 for user in users):
            raise forms.ValidationError("A Bitrix24 user id is a positive number.")
        return users

    def validate(self, value: Any) -> None:
        super().validate(value)
        if not value or not Bitrix24User.objects.exists():
            return
        known = {user.id: user for user in Bitrix24User.objects.filter(pk__in=value)}
        problems = [
            _label(user_id, known.get(user_id))
            for user_id in value
            if user_id not in known or not known[user_id].active
        ]
        if problems:
            raise forms.ValidationError(
                f"Not an active Bitrix24 user: {', '.join(problems)}. Remove them or pick another."
            )


def _label(user_id: int, user: Bitrix24User | None) -> str:
    if user is None:
        return f"User #{user_id} (not in Bitrix24)"
    if not user.active:
        return f"{user.name} (#{user_id}, deactivated)"
    return f"{user.name} (#{user_id})"
