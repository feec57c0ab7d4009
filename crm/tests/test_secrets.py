"""The connection's secrets are encrypted at rest: in the table, in a pg_dump, across key
rotation and through the migration that encrypted the rows written before."""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.contrib.auth.models import User
from django.core.exceptions import FieldError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django_tenants.utils import schema_context

from accounts.models import TotpDevice
from common.crypto import (
    ENCRYPTED_PREFIX,
    SecretUndecryptable,
    secret_decrypt,
    secret_encrypt,
)
from crm.models import Bitrix24Connection
from crm.services import connection_set_webhook

migration = importlib.import_module("crm.migrations.0004_secrets_encrypted")

SECRET_FIELDS = [
    "webhook_url",
    "oauth_client_secret",
    "oauth_access_token",
    "oauth_refresh_token",
    "oauth_application_token",
    "events_token",
]
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def _secrets(tag: str) -> dict[str, str]:
    """A recognisable value for every secret column (the webhook's secret is in its path)."""
    mark = f"{tag}{uuid.uuid4().hex[:12]}"
    return {
        "webhook_url": f"https://portal.example.com/rest/1/webhooksecret{mark}/",
        "oauth_client_secret": f"clientsecret{mark}",
        "oauth_access_token": f"accesstoken{mark}",
        "oauth_refresh_token": f"refreshtoken{mark}",
        "oauth_application_token": f"apptoken{mark}",
        "events_token": f"eventstoken{mark}",
    }


def _store(values: dict[str, str]) -> None:
    Bitrix24Connection.objects.update_or_create(singleton=1, defaults=values)


def _raw(columns: list[str] = SECRET_FIELDS) -> dict[str, str]:
    """The row as the database holds it, past the field's decryption."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM crm_bitrix24connection")  # noqa: S608
        row = cursor.fetchone()
    return dict(zip(columns, row, strict=True))


def test_secrets_are_stored_encrypted_and_read_back_plain(alpha: Any) -> None:
    values = _secrets("stored")
    _store(values)

    raw = _raw()
    for name, plain in values.items():
        assert raw[name].startswith(ENCRYPTED_PREFIX), name
        assert plain not in raw[name]
    # Randomised: the same value encrypts differently each time.
    assert secret_encrypt(values["webhook_url"]) != secret_encrypt(values["webhook_url"])

    conn = Bitrix24Connection.objects.get()
    assert {name: getattr(conn, name) for name in SECRET_FIELDS} == values
    assert Bitrix24Connection.objects.values(*SECRET_FIELDS).get() == values
    assert conn.webhook_url_masked == "https://portal.example.com/rest/1/****/"
    # .update() encrypts too.
    Bitrix24Connection.objects.update(oauth_access_token="updated-token")
    assert _raw(["oauth_access_token"])["oauth_access_token"].startswith(ENCRYPTED_PREFIX)
    assert Bitrix24Connection.objects.get().oauth_access_token == "updated-token"


def test_an_unset_secret_stays_empty_and_can_be_told_apart(alpha: Any) -> None:
    connection_set_webhook(webhook_url="https://portal.example.com/rest/1/abc/")
    raw = _raw()
    assert raw["oauth_refresh_token"] == ""
    assert raw["webhook_url"].startswith(ENCRYPTED_PREFIX)
    assert Bitrix24Connection.objects.filter(webhook_url__isnull=False).count() == 1


def test_the_database_is_never_asked_to_compare_an_encrypted_column(alpha: Any) -> None:
    # Randomised encryption cannot match in SQL: refused loudly instead of matching nothing.
    connection_set_webhook(webhook_url="https://portal.example.com/rest/1/abc/")
    with pytest.raises(FieldError, match="Unsupported lookup 'exact'"):
        Bitrix24Connection.objects.filter(webhook_url="https://portal.example.com/rest/1/abc/")
    with pytest.raises(FieldError, match="Unsupported lookup 'icontains'"):
        Bitrix24Connection.objects.filter(oauth_application_token__icontains="abc")


# --- pg_dump ----------------------------------------------------------------------------------


def _major(pg_dump: Path) -> int:
    out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    assert match, out.stdout
    return int(match[1])


def _pg_dump_binary() -> Path:
    """A pg_dump at least as new as the server: the embedded pgserver's, Debian's, or PATH's."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        server_major = int(cursor.fetchone()[0]) // 10000
    candidates: list[Path] = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and _major(candidate) >= server_major:
            return candidate
    raise AssertionError(f"no pg_dump for PostgreSQL {server_major} among {candidates}")


def _pg_dump() -> str:
    settings_dict = connection.settings_dict
    args = [str(_pg_dump_binary()), "--no-owner", "--dbname", settings_dict["NAME"]]
    # HOST is a socket directory for the embedded PostgreSQL, an address otherwise.
    args += ["--host", settings_dict["HOST"] or "127.0.0.1"]
    if settings_dict["PORT"]:
        args += ["--port", str(settings_dict["PORT"])]
    args += ["--username", settings_dict["USER"] or "postgres"]
    env = {**os.environ, "PGPASSWORD": settings_dict["PASSWORD"] or ""}
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def _committed_connection(schema: str, values: dict[str, Any]) -> Iterator[None]:
    """`values` committed on `schema`'s connection row; the row as it was afterwards."""
    with schema_context(schema):
        before = Bitrix24Connection.objects.filter(singleton=1).values().first()
        _store(values)
    try:
        yield
    finally:
        with schema_context(schema):
            if before is None:
                Bitrix24Connection.objects.all().delete()
            else:
                Bitrix24Connection.objects.filter(singleton=1).update(**before)


def test_no_secret_in_a_pg_dump(committed_db: Callable[[Callable[[], None]], None]) -> None:
    alpha, beta = _secrets("alphadump"), _secrets("betadump")
    marker = f"client-id-{uuid.uuid4().hex[:8]}"  # not a secret: proves the row is in the dump
    with (
        _committed_connection("alpha", alpha),
        _committed_connection("beta", {**beta, "oauth_client_id": marker}),
    ):
        dump = _pg_dump()

    assert marker in dump
    assert dump.count(ENCRYPTED_PREFIX) >= 2 * len(SECRET_FIELDS)
    for secrets in (alpha, beta):
        for name, value in secrets.items():
            assert value not in dump, name
        webhook_secret = secrets["webhook_url"].rstrip("/").rsplit("/", 1)[1]
        assert webhook_secret not in dump


def test_no_two_factor_key_in_a_pg_dump(committed_db: Callable[[Callable[[], None]], None]) -> None:
    """An admin's TOTP seed (accounts.TotpDevice) is a secret like the portal's: a dump with it
    would be everyone's second factor. Neither its hex nor its base32 (the QR code's) form."""
    keys = {}
    for schema in ("public", "alpha"):
        with schema_context(schema):
            user = User.objects.create_user(f"dump-{uuid.uuid4().hex[:8]}", password="pw")
            device = TotpDevice.objects.create(user=user, name=f"dump-device-{schema}")
            committed_db(functools.partial(_delete_user, schema, user))
            keys[schema] = device.key
    dump = _pg_dump()

    # The rows are in it.
    assert "dump-device-public" in dump
    assert "dump-device-alpha" in dump
    for key_hex in keys.values():
        key = bytes.fromhex(key_hex)
        for form in (key_hex, key_hex.upper(), base64.b32encode(key).decode().rstrip("=")):
            assert form not in dump


def _delete_user(schema: str, user: User) -> None:
    with schema_context(schema):
        user.delete()


# --- Keys and rotation ------------------------------------------------------------------------


def test_an_old_key_still_decrypts_while_it_is_listed_after_the_new_one() -> None:
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[OLD_KEY]):
        stored = secret_encrypt("s3cret-value")
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        assert secret_decrypt(stored) == "s3cret-value"
        newly = secret_encrypt("s3cret-value")
    # The first key encrypts.
    token = newly.removeprefix(ENCRYPTED_PREFIX)
    assert Fernet(NEW_KEY.encode()).decrypt(token.encode()) == b"s3cret-value"
    with (
        override_settings(SIMTRIX_ENCRYPTION_KEYS=[NEW_KEY]),
        pytest.raises(SecretUndecryptable, match="SIMTRIX_ENCRYPTION_KEY"),
    ):
        secret_decrypt(stored)


def _rotate() -> dict[str, int]:
    out = io.StringIO()
    call_command("secrets_rotate", stdout=out)
    return json.loads(out.getvalue())


def test_secrets_rotate_reencrypts_every_tenant_with_the_first_key(
    tenants: dict[str, Any], db: None
) -> None:
    alpha, beta = _secrets("alpharot"), _secrets("betarot")
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[OLD_KEY]):
        for schema, values in (("alpha", alpha), ("beta", beta)):
            with schema_context(schema):
                _store(values)
                before = _raw()

    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        result = _rotate()
        assert result["reencrypted"] == 2 * len(SECRET_FIELDS)
        assert result["schemas"] >= 3  # public, alpha, beta
        assert _rotate()["reencrypted"] == 0  # a second run finds nothing left to do

    new_only = Fernet(NEW_KEY.encode())
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[NEW_KEY]):
        for schema, values in (("alpha", alpha), ("beta", beta)):
            with schema_context(schema):
                raw = _raw()
                for name in SECRET_FIELDS:
                    token = raw[name].removeprefix(ENCRYPTED_PREFIX).encode()
                    assert new_only.decrypt(token).decode() == values[name]
                conn = Bitrix24Connection.objects.get()
                assert {name: getattr(conn, name) for name in SECRET_FIELDS} == values
    assert raw != before


def test_secrets_rotate_with_a_value_no_key_opens_fails_and_changes_nothing(
    tenants: dict[str, Any], db: None
) -> None:
    lost_key = Fernet.generate_key().decode()
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[OLD_KEY]), schema_context("alpha"):
        _store(_secrets("kept"))
        alpha_before = _raw()
    with override_settings(SIMTRIX_ENCRYPTION_KEYS=[lost_key]), schema_context("beta"):
        _store(_secrets("lost"))

    with (
        override_settings(SIMTRIX_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]),
        pytest.raises(CommandError, match=r"Schema 'beta'.*cannot be decrypted.*Nothing was"),
    ):
        _rotate()
    with schema_context("alpha"):
        assert _raw() == alpha_before


# --- The migration --------------------------------------------------------------------------


def _migrate(target: str) -> None:
    MigrationExecutor(connection).migrate([("crm", target)])


def test_the_migration_encrypts_plain_rows_and_back(alpha: Any) -> None:
    values = _secrets("migrated")
    _store(values)
    columns = [name for name in SECRET_FIELDS if name != "events_token"]  # added by 0004

    _migrate("0003_directory_fields_timeman")
    assert _raw(columns) == {name: values[name] for name in columns}  # decrypted backwards
    # A value written in clear past the field, as every row was before the upgrade.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE crm_bitrix24connection SET oauth_access_token = 'written-raw'")
    values["oauth_access_token"] = "written-raw"

    _migrate("0004_secrets_encrypted")

    raw = _raw(columns)
    for name in columns:
        assert raw[name].startswith(ENCRYPTED_PREFIX), name
        assert values[name] not in raw[name]
    _migrate("0006_sms_provider")  # the model's columns, for the ORM
    conn = Bitrix24Connection.objects.get()
    assert {name: getattr(conn, name) for name in columns} == {n: values[n] for n in columns}
    assert conn.events_token == ""
    # Values already encrypted are left as they are (a re-run, rows the new code wrote first).
    with connection.schema_editor() as editor:
        migration.secrets_encrypt(apps, editor)
    assert _raw(columns) == raw
