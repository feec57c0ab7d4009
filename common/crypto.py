"""Secrets at rest: the columns that hold portal credentials are stored as Fernet tokens.

A database dump (a backup, a replica, a stolen disk) must not be CRM access to every customer's
portal, so the webhook URL (its secret is in the path) and the OAuth secrets and tokens are kept
encrypted (Fernet: AES-128-CBC with an HMAC-SHA256, through ``cryptography``). Python code reads
and writes the plain values as before: `EncryptedTextField` encrypts on the way to the database
and decrypts on the way back.

Keys come from ``settings.SIMTRIX_ENCRYPTION_KEYS`` (the ``SIMTRIX_ENCRYPTION_KEY`` variable,
comma-separated): the first encrypts, every one decrypts (``MultiFernet``). A key is rotated by
putting a new one first, restarting every process, running ``manage.py secrets_rotate`` (which
re-encrypts every stored value with the first key), then dropping the old key.

Stored form: ``fernet:v1:<token>``. The prefix tells an encrypted value from a row written before
encryption existed (read as is, and encrypted by the migration or by ``secrets_rotate``); an
empty value stays empty, so "not set" is all a dump tells about an unused secret.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import MaxLengthValidator
from django.db import connection, models, router
from django.utils.translation import gettext_lazy as _

ENCRYPTED_PREFIX = "fernet:v1:"


class SecretUndecryptable(ImproperlyConfigured):
    """A stored secret that no configured key opens: a key was dropped before rotating."""

    def __init__(self, where: str = "A stored secret") -> None:
        super().__init__(
            f"{where} cannot be decrypted with any key in SIMTRIX_ENCRYPTION_KEY: was the key "
            "it was encrypted with removed before `manage.py secrets_rotate` ran? Put it back "
            "(after the new key), rotate, then remove it."
        )


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _keys() -> tuple[str, ...]:
    # Read on every use (a tuple is cheap to hash), so a test's override_settings applies at once.
    return tuple(settings.SIMTRIX_ENCRYPTION_KEYS)


def secret_is_encrypted(stored: str) -> bool:
    return stored.startswith(ENCRYPTED_PREFIX)


def secret_encrypt(value: str) -> str:
    """The stored form of `value`, encrypted with the first key; "" stays "" (not set)."""
    if not value:
        return value
    token = _fernet(_keys()).encrypt(value.encode())
    return ENCRYPTED_PREFIX + token.decode("ascii")


def secret_decrypt(stored: str) -> str:
    """The plain value of a stored secret (one written before encryption is returned as is)."""
    if not secret_is_encrypted(stored):
        return stored
    try:
        return _fernet(_keys()).decrypt(stored.removeprefix(ENCRYPTED_PREFIX)).decode()
    except InvalidToken:
        raise SecretUndecryptable() from None


def secret_encrypt_if_plain(stored: str) -> str:
    """For the migration: encrypts a value written in clear, leaves an encrypted one alone."""
    return stored if not stored or secret_is_encrypted(stored) else secret_encrypt(stored)


def secret_rotate(stored: str) -> str | None:
    """`stored` encrypted with the first key, or None when it already is (nothing to write)."""
    if not stored:
        return None
    if not secret_is_encrypted(stored):
        return secret_encrypt(stored)
    token = stored.removeprefix(ENCRYPTED_PREFIX).encode("ascii")
    keys = _keys()
    try:
        Fernet(keys[0]).decrypt(token)
    except InvalidToken:
        pass
    else:
        return None
    try:
        return ENCRYPTED_PREFIX + _fernet(keys).rotate(token).decode("ascii")
    except InvalidToken:
        raise SecretUndecryptable() from None


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code sees the plain value.

    The encryption is randomised (the same value encrypts differently each time), so the
    database cannot compare these columns: every lookup but ``isnull`` is refused rather than
    silently matching nothing. Load the row and compare in Python (``hmac.compare_digest``).
    ``max_length`` bounds the plain value (validation, forms), not the column: a token is longer.
    """

    description = _("Text stored encrypted (Fernet)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.max_length is not None:
            self.validators.append(MaxLengthValidator(self.max_length))

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None:
            return value
        try:
            return secret_decrypt(value)
        except SecretUndecryptable:
            raise SecretUndecryptable(f"{self.model._meta.label}.{self.name}") from None

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return value if value is None else secret_encrypt(value)

    def get_lookup(self, lookup_name: str) -> Any:
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None

    def get_transform(self, lookup_name: str) -> Any:
        return None


# ----------------------------------------------------------------------------------------------
# Key rotation


@dataclass
class SecretsRotated:
    """What one schema's rotation found: rows with a secret, secrets, secrets rewritten."""

    rows: int = 0
    secrets: int = 0
    reencrypted: int = 0


def encrypted_models() -> list[tuple[type[models.Model], list[EncryptedTextField]]]:
    found = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if fields:
            found.append((model, fields))
    return found


def secrets_rotate_schema(*, schema: str) -> SecretsRotated:
    """Re-encrypts every stored secret of the current schema with the first key.

    Run inside a transaction: each row is locked while it is rewritten, so an OAuth refresh
    committing new tokens at the same moment waits instead of being overwritten with the old
    ones. The values are read raw (not through the field) to tell which are already current.
    """
    result = SecretsRotated()
    quote = connection.ops.quote_name
    for model, fields in encrypted_models():
        if not router.allow_migrate_model(connection.alias, model):
            continue  # the table does not exist in this schema (a tenant app in public)
        pk = model._meta.pk
        if pk is None or pk.column is None:  # never for a concrete model; says so to mypy
            continue
        pk_column = quote(pk.column)
        columns = [field.column for field in fields if field.column]
        table = quote(model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {pk_column}, {', '.join(map(quote, columns))} "  # noqa: S608
                f"FROM {table} ORDER BY 1 FOR UPDATE"
            )
            for row_pk, *values in cursor.fetchall():
                changes: dict[str, str] = {}
                for column, value in zip(columns, values, strict=True):
                    if not value:
                        continue
                    result.secrets += 1
                    try:
                        rotated = secret_rotate(value)
                    except SecretUndecryptable:
                        where = f"Schema {schema!r}: {model._meta.label} #{row_pk} {column}"
                        raise SecretUndecryptable(where) from None
                    if rotated is not None:
                        changes[column] = rotated
                result.rows += 1 if any(values) else 0
                if changes:
                    assignments = ", ".join(f"{quote(column)} = %s" for column in changes)
                    cursor.execute(
                        f"UPDATE {table} SET {assignments} "  # noqa: S608
                        f"WHERE {pk_column} = %s",
                        [*changes.values(), row_pk],
                    )
                    result.reencrypted += len(changes)
    return result
