"""accounts.TotpDevice: django-otp's TOTP device, its key encrypted; its admins; the move of
devices enrolled with django-otp's own (plain-key) table."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_otp import devices_for_user
from django_otp.oath import totp
from django_otp.util import random_hex
from django_tenants.utils import schema_context

from accounts.models import TotpDevice
from common.crypto import ENCRYPTED_PREFIX, secret_decrypt
from tenants.models import Tenant


def code(device: TotpDevice, *, steps_ahead: int = 0) -> int:
    return totp(device.bin_key, step=device.step, t0=device.t0, drift=steps_ahead)


def _stored_key(device: TotpDevice) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM accounts_totpdevice WHERE id = %s", [device.pk])
        return cursor.fetchone()[0]


@pytest.fixture
def alpha_admin(alpha: Tenant) -> User:
    return User.objects.create_superuser("admin", password="pw-alpha")


def test_the_key_is_stored_encrypted_and_read_back_plain(alpha_admin: User) -> None:
    device = TotpDevice.objects.create(user=alpha_admin, name="Authenticator app")
    stored = _stored_key(device)
    assert stored.startswith(ENCRYPTED_PREFIX)
    assert device.key not in stored
    assert secret_decrypt(stored) == device.key
    assert TotpDevice.objects.get(pk=device.pk).key == device.key
    assert len(bytes.fromhex(device.key)) == 20
    # Randomised encryption: the database cannot compare keys, and is not asked to.
    with pytest.raises(Exception, match="Unsupported lookup"):
        TotpDevice.objects.filter(key=device.key).exists()


def test_django_otp_finds_it_and_a_code_passes_once(alpha_admin: User) -> None:
    device = TotpDevice.objects.create(user=alpha_admin, name="Authenticator app")
    assert [d.pk for d in devices_for_user(alpha_admin)] == [device.pk]
    assert device.persistent_id == f"accounts.totpdevice/{device.pk}"

    token = code(device, steps_ahead=1)  # the next period's: not spent by anything else
    assert device.verify_token(token)
    device.refresh_from_db()
    assert device.last_used_at is not None
    assert device.drift == 1  # the app's clock is a step ahead: remembered
    assert not device.verify_token(token)  # replayed: refused


def test_a_wrong_code_makes_the_next_try_wait(alpha_admin: User) -> None:
    device = TotpDevice.objects.create(user=alpha_admin, name="Authenticator app")
    assert not device.verify_token((code(device) + 1) % 1_000_000)
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    assert device.verify_is_allowed()[0] is False
    assert not device.verify_token(code(device, steps_ahead=1))  # right, but too soon

    # The wait over (here: moved back an hour), a code is tried again; not a number is wrong.
    TotpDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timedelta(hours=1)
    )
    device.refresh_from_db()
    assert not device.verify_token("not a code")
    device.refresh_from_db()
    assert device.throttling_failure_count == 2


def test_the_qr_code_uri_carries_the_key_and_the_issuer(alpha_admin: User) -> None:
    device = TotpDevice(user=alpha_admin, key=random_hex(20))
    url = urlsplit(device.config_url_for("SIMtrix alpha.localhost"))
    assert (url.scheme, url.netloc) == ("otpauth", "totp")
    assert url.path == "/SIMtrix%20alpha.localhost%3Aadmin"
    query = parse_qs(url.query)
    secret = query["secret"][0]
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) == device.bin_key
    assert query["issuer"] == ["SIMtrix alpha.localhost"]
    assert (query["digits"], query["period"]) == (["6"], ["30"])


# --- The admins --------------------------------------------------------------------------------


def _device_pages(client: Client, device: TotpDevice) -> list[str]:
    listing = client.get("/admin/accounts/totpdevice/")
    change = client.get(f"/admin/accounts/totpdevice/{device.pk}/change/")
    assert (listing.status_code, change.status_code) == (200, 200)
    return [listing.content.decode(), change.content.decode()]


def _assert_key_not_shown(pages: list[str], device: TotpDevice) -> None:
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    for page in pages:
        for form in (device.key, device.key.upper(), secret, ENCRYPTED_PREFIX):
            assert form not in page


def test_a_tenant_admin_deletes_a_colleagues_lost_device_and_never_sees_a_key(
    alpha_admin: User,
) -> None:
    colleague = User.objects.create_user("agent", password="pw", is_staff=True)
    device = TotpDevice.objects.create(user=colleague, name="Lost phone")
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(alpha_admin)  # no device of its own: the password is the whole login

    pages = _device_pages(client, device)
    assert "Lost phone" in pages[0]
    _assert_key_not_shown(pages, device)
    # Added only by its user, through the enrolment page.
    assert client.get("/admin/accounts/totpdevice/add/").status_code == 403

    response = client.post(f"/admin/accounts/totpdevice/{device.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not TotpDevice.objects.exists()


def test_operators_see_their_own_devices_not_a_tenants(alpha_admin: User) -> None:
    TotpDevice.objects.create(user=alpha_admin, name="Tenant admin's phone")
    with schema_context("public"):
        operator = User.objects.create_superuser("operator", password="pw-operator")
        device = TotpDevice.objects.create(user=User.objects.create_user("op2"), name="Op phone")
        client = Client(HTTP_HOST="localhost")
        client.force_login(operator)  # the session in public, like the operator's

    pages = _device_pages(client, device)
    assert "Op phone" in pages[0]
    assert "Tenant admin&#x27;s phone" not in pages[0]
    assert "Tenant admin's phone" not in pages[0]
    _assert_key_not_shown(pages, device)
    assert client.get("/admin/accounts/totpdevice/add/").status_code == 403
