"""Form fields shared by the scenario and routing admins."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.utils.translation import gettext

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
                message = (
                    gettext(
                        "%(part)s is not a Bitrix24 user id, several users have that name, "
                        "use the id."
                    )
                    if matches
                    else gettext("%(part)s is not a Bitrix24 user id, nor a Bitrix24 user's name.")
                )
                raise forms.ValidationError(message % {"part": repr(part)})
            users.append(matches[0])
        users = list(dict.fromkeys(users))
        if any(user <= 0 for user in users):
            raise forms.ValidationError(gettext("A Bitrix24 user id is a positive number."))
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
                gettext("Not an active Bitrix24 user: %(users)s. Remove them or pick another.")
                % {"users": ", ".join(problems)}
            )


def _label(user_id: int, user: Bitrix24User | None) -> str:
    if user is None:
        return gettext("User #%(id)s (not in Bitrix24)") % {"id": user_id}
    if not user.active:
        return gettext("%(name)s (#%(id)s, deactivated)") % {"name": user.name, "id": user_id}
    return f"{user.name} (#{user_id})"


class DirectoryChoiceField(forms.TypedChoiceField):
    """A Bitrix24 lead status, source, pipeline or stage picked by name from the synced
    directory ("Sales: Negotiation (C1:NEGOTIATION)"). A value the directory does not hold
    (saved before a change in Bitrix24) stays selectable and is shown flagged, so opening and
    saving an action never changes it silently; the action's "Bitrix24 references" line says
    it will be skipped. Before the first sync the choices are just the stored value."""

    def __init__(
        self,
        *,
        choices: list[tuple[Any, str]],
        current: Any,
        coerce: Any = str,
        **kwargs: Any,
    ) -> None:
        known = [(value, f"{name} ({value})") for value, name in choices]
        options: list[tuple[Any, str]] = [("", "---------"), *known]
        if current not in (None, "") and current not in {value for value, _name in choices}:
            flagged = gettext("%(value)s (not in Bitrix24)") % {"value": current}
            options.append((current, flagged))
        empty = None if coerce is int else ""
        super().__init__(
            choices=options, coerce=coerce, empty_value=empty, required=False, **kwargs
        )


class FieldValuesField(forms.CharField):
    """The fields an "update fields" action sets: one per line, ``NAME = value`` (a value may
    use the message placeholders: ``UF_CRM_LAST_CALL = {outcome} {time}``), or a JSON object.
    Stored as a JSON object."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        if isinstance(value, dict):
            if any(not isinstance(v, str) for v in value.values()):
                return json.dumps(value, ensure_ascii=False)
            return "\n".join(f"{name} = {text}" for name, text in value.items())
        return value or ""

    def to_python(self, value: Any) -> dict[str, Any]:  # type: ignore[override]  # text in, a mapping out
        text = (super().to_python(value) or "").strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise forms.ValidationError(
                    gettext("Not valid JSON: %(error)s") % {"error": exc}
                ) from exc
            if not isinstance(data, dict):
                raise forms.ValidationError(gettext("Write one field per line: NAME = value."))
            return data
        fields: dict[str, Any] = {}
        for line in (line.strip() for line in text.splitlines()):
            if not line:
                continue
            name, equals, rest = line.partition("=")
            if not equals or not name.strip():
                raise forms.ValidationError(
                    gettext("%(line)s: write one field per line, NAME = value.")
                    % {"line": repr(line)}
                )
            fields[name.strip()] = rest.strip()
        return fields


class ConditionsField(forms.JSONField):
    """An action's conditions as JSON, the routing rules' shape; empty = none."""

    def to_python(self, value: Any) -> Any:
        if value in (None, "") or (isinstance(value, str) and not value.strip()):
            return []
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if value in (None, [], "[]"):
            return ""
        return super().prepare_value(value)
