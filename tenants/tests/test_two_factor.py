"""Two-factor logins (TOTP) on both admins, with real codes computed from the device's key."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client
from django_otp.oath import totp
from django_tenants.utils import schema_context
from pytest_django import Settings

from accounts.models import TotpDevice
from tenants.models import Tenant
from tenants.twofactor import PENDING_KEY_SESSION_KEY

GENERIC_ERROR = (
    "Please enter the correct username and password for a staff account, and the current code "
    "of your authenticator app if you have set one up. Note that both fields may be "
    "case-sensitive; after a wrong code, wait a little before the next try."
)


def code(key_hex: str, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or `steps_ahead` periods of 30 s later: a code
    is accepted once, and the window admits the next one, so a test never waits)."""
    return f"{totp(binascii.unhexlify(key_hex), drift=steps_ahead):06d}"


def _login(host: str, username: str, password: str, token: str = "") -> tuple[Client, Any]:
    client = Client(HTTP_HOST=host)
    response = client.post(
        "/admin/login/",
        {"username": username, "password": password, "otp_token": token, "next": "/admin/"},
    )
    return client, response


def _enrol(client: Client) -> str:
    """Goes through the enrolment page as the user would; returns the device's key."""
    page = client.get("/admin/two-factor/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html  # the QR code
    key_hex = client.session[PENDING_KEY_SESSION_KEY]
    shown = re.search(r'id="two-factor-secret"[^>]*>([A-Z2-7 ]+)<', html)
    assert shown is not None  # the key to type in by hand is the one in the session
    secret = shown.group(1).replace(" ", "")
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) == binascii.unhexlify(key_hex)
    response = client.post("/admin/two-factor/", {"otp_token": code(key_hex)})
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    return key_hex


@pytest.fixture
def alpha_admin(alpha: Tenant) -> User:
    return User.objects.create_superuser("admin", password="pw-alpha")


def test_a_user_enrols_and_then_every_login_asks_for_the_code(alpha_admin: User) -> None:
    client, response = _login("alpha.localhost", "admin", "pw-alpha")
    assert response.status_code == 302  # no device yet: the password is enough
    key_hex = _enrol(client)
    with schema_context("alpha"):
        device = TotpDevice.objects.get(user__username="admin")
        assert (device.confirmed, device.key) == (True, key_hex)
    assert client.get("/admin/").status_code == 200  # this session passed the code already

    # The password alone: refused.
    client, response = _login("alpha.localhost", "admin", "pw-alpha")
    assert response.status_code == 200
    assert GENERIC_ERROR in response.content.decode()
    assert client.get("/admin/").status_code == 302

    # A wrong code: refused.
    wrong = f"{(int(code(key_hex, steps_ahead=1)) + 1) % 1_000_000:06d}"
    _, response = _login("alpha.localhost", "admin", "pw-alpha", wrong)
    assert response.status_code == 200
    assert GENERIC_ERROR in response.content.decode()
    with schema_context("alpha"):
        # django-otp delays the next try after a wrong code: a user waits, the test resets it.
        TotpDevice.objects.filter(pk=device.pk).update(
            throttling_failure_count=0, throttling_failure_timestamp=None
        )

    # The right code: in.
    token = code(key_hex, steps_ahead=1)
    client, response = _login("alpha.localhost", "admin", "pw-alpha", token)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    # The same code once more: refused (a code seen over a shoulder is spent).
    client, response = _login("alpha.localhost", "admin", "pw-alpha", token)
    assert response.status_code == 200
    assert GENERIC_ERROR in response.content.decode()
    assert client.get("/admin/").status_code == 302


def _errors(response: Any) -> str:
    """The login page's error notes, the part that differs between one failure and another."""
    notes = re.findall(r'<p class="errornote">\s*(.*?)\s*</p>', response.content.decode(), re.S)
    return " | ".join(notes)


def test_a_wrong_code_and_a_wrong_password_get_the_same_answer(
    alpha_admin: User, settings: Settings
) -> None:
    """Else whoever guesses passwords learns which one was right from the code's message."""
    settings.AXES_FAILURE_LIMIT = 10  # five failures below, none of them a lockout
    client, _ = _login("alpha.localhost", "admin", "pw-alpha")
    key_hex = _enrol(client)
    wrong = f"{(int(code(key_hex, steps_ahead=1)) + 1) % 1_000_000:06d}"

    answers = {
        "wrong password, no code": _login("alpha.localhost", "admin", "wrong")[1],
        "wrong password, right code": _login(
            "alpha.localhost", "admin", "wrong", code(key_hex, steps_ahead=1)
        )[1],
        "right password, no code": _login("alpha.localhost", "admin", "pw-alpha")[1],
        "right password, wrong code": _login("alpha.localhost", "admin", "pw-alpha", wrong)[1],
        "right password, code delayed": _login("alpha.localhost", "admin", "pw-alpha", wrong)[1],
    }

    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 200)
    assert {name: _errors(r) for name, r in answers.items()} == dict.fromkeys(
        answers, GENERIC_ERROR
    )


def test_wrong_codes_count_towards_the_lockout(alpha_admin: User, settings: Settings) -> None:
    client, _ = _login("alpha.localhost", "admin", "pw-alpha")
    key_hex = _enrol(client)
    wrong = f"{(int(code(key_hex, steps_ahead=1)) + 1) % 1_000_000:06d}"

    statuses = [
        _login("alpha.localhost", "admin", "pw-alpha", wrong)[1].status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]

    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    with schema_context("public"):
        attempt = AccessAttempt.objects.get()
    assert attempt.username == "alpha:admin"
    assert attempt.failures_since_start == settings.AXES_FAILURE_LIMIT
    assert wrong not in attempt.post_data  # the code is masked like the password
    with schema_context("alpha"):
        # Not django-otp's delay that refuses the right code below: axes' lockout.
        TotpDevice.objects.update(throttling_failure_count=0, throttling_failure_timestamp=None)
    client, response = _login("alpha.localhost", "admin", "pw-alpha", code(key_hex, steps_ahead=1))
    assert response.status_code == 429
    assert client.get("/admin/").status_code == 302


def test_a_session_without_the_code_of_an_enrolled_user_is_not_logged_in(
    alpha_admin: User,
) -> None:
    with schema_context("alpha"):
        TotpDevice.objects.create(user=alpha_admin, name="Authenticator app", confirmed=True)
    client = Client(HTTP_HOST="alpha.localhost")
    client.force_login(alpha_admin)  # the password's half of a login, without the code
    response = client.get("/admin/calls/call/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert "without your two-factor code yet" in client.get("/admin/login/").content.decode()


def test_a_wrong_enrolment_code_creates_no_device(alpha_admin: User) -> None:
    client, _ = _login("alpha.localhost", "admin", "pw-alpha")
    client.get("/admin/two-factor/")
    key_hex = client.session[PENDING_KEY_SESSION_KEY]
    wrong = f"{(int(code(key_hex)) + 1) % 1_000_000:06d}"
    for token, error in [
        (wrong, "That code does not match"),
        ("not-a-code", "That code does not match"),
        ("", "This field is required"),
    ]:
        response = client.post("/admin/two-factor/", {"otp_token": token})
        assert response.status_code == 200
        assert error in response.content.decode(), token
    with schema_context("alpha"):
        assert not TotpDevice.objects.exists()
    assert client.session[PENDING_KEY_SESSION_KEY] == key_hex  # the QR code shown stays valid


def test_devices_are_per_tenant_like_their_users(alpha_admin: User, beta: Tenant) -> None:
    with schema_context("beta"):
        User.objects.create_superuser("admin", password="pw-beta")
    _enrol(_login("alpha.localhost", "admin", "pw-alpha")[0])
    with schema_context("beta"):
        assert not TotpDevice.objects.exists()
    # Beta's "admin" is another person: no code asked.
    assert _login("beta.localhost", "admin", "pw-beta")[1].status_code == 302


def test_an_enrolled_user_turns_it_off_with_a_current_code(alpha_admin: User) -> None:
    client, _ = _login("alpha.localhost", "admin", "pw-alpha")
    key_hex = _enrol(client)
    page = client.get("/admin/two-factor/").content.decode()
    assert "Two-factor authentication is on" in page
    assert "two-factor-secret" not in page  # the key is never shown again
    response = client.post("/admin/two-factor/", {"otp_token": code(key_hex, steps_ahead=1)})
    assert response.status_code == 302
    with schema_context("alpha"):
        assert not TotpDevice.objects.exists()
    assert _login("alpha.localhost", "admin", "pw-alpha")[1].status_code == 302


def test_required_by_the_operators_a_tenant_admin_enrols_before_anything_else(
    alpha_admin: User, tenants: dict[str, Tenant]
) -> None:
    alpha = Tenant.objects.get(pk=tenants["alpha"].pk)  # not the session's shared instance
    alpha.require_two_factor = True
    alpha.save(update_fields=["require_two_factor"])

    client, response = _login("alpha.localhost", "admin", "pw-alpha")
    assert response.status_code == 302
    for url in ("/admin/", "/admin/calls/call/", "/admin/scenarios/scenario/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == "/admin/two-factor/", url
    assert "is required here" in client.get("/admin/two-factor/").content.decode()

    key_hex = _enrol(client)
    assert client.get("/admin/calls/call/").status_code == 200
    assert client.get("/admin/password_change/").status_code == 200  # now it may
    # Required: it cannot be turned off.
    page = client.post("/admin/two-factor/", {"otp_token": code(key_hex, steps_ahead=1)})
    assert "cannot be turned off" in page.content.decode()
    with schema_context("alpha"):
        assert TotpDevice.objects.count() == 1


def test_required_a_tenant_admin_cannot_change_the_password_before_enrolling(
    alpha_admin: User, tenants: dict[str, Tenant]
) -> None:
    """The password alone is half a login where a code is required: it changes nothing."""
    alpha = Tenant.objects.get(pk=tenants["alpha"].pk)
    alpha.require_two_factor = True
    alpha.save(update_fields=["require_two_factor"])
    client, _ = _login("alpha.localhost", "admin", "pw-alpha")

    for url in ("/admin/password_change/", "/admin/password_change/done/"):
        response = client.get(url)
        assert (response.status_code, response["Location"]) == (302, "/admin/two-factor/"), url
    response = client.post(
        "/admin/password_change/",
        {
            "old_password": "pw-alpha",
            "new_password1": "n3w-Passw0rd!",
            "new_password2": "n3w-Passw0rd!",
        },
    )
    assert (response.status_code, response["Location"]) == (302, "/admin/two-factor/")

    alpha_admin.refresh_from_db()
    assert alpha_admin.check_password("pw-alpha")
    assert client.get("/admin/logout/").status_code in (200, 405)  # logging out stays open


def test_the_operators_tick_the_requirement_on_the_tenant(
    tenants: dict[str, Tenant], db: None
) -> None:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator")
    operator, _ = _login("localhost", "operator", "pw-operator")
    alpha = Tenant.objects.get(pk=tenants["alpha"].pk)
    form = operator.get(f"/admin/tenants/tenant/{alpha.pk}/change/").content.decode()
    assert 'name="require_two_factor"' in form
    response = operator.post(
        f"/admin/tenants/tenant/{alpha.pk}/change/",
        {
            "name": alpha.name,
            "timezone": alpha.timezone,
            "default_country": alpha.default_country,
            "language": alpha.language,
            "is_active": "on",
            "require_two_factor": "on",
            "domains-TOTAL_FORMS": "0",
            "domains-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    alpha.refresh_from_db()
    assert alpha.require_two_factor is True


def test_operators_can_be_required_to_use_it(
    tenants: dict[str, Tenant], db: None, settings: Settings
) -> None:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator")
    settings.SIMTRIX_REQUIRE_OPERATOR_2FA = True
    client, _ = _login("localhost", "operator", "pw-operator")
    response = client.get("/admin/tenants/tenant/")
    assert (response.status_code, response["Location"]) == (302, "/admin/two-factor/")
    key_hex = _enrol(client)
    assert client.get("/admin/tenants/tenant/").status_code == 200
    with schema_context("public"):
        assert TotpDevice.objects.get(user__username="operator").key == key_hex
    # From now on the operator's login asks for the code.
    assert _login("localhost", "operator", "pw-operator")[1].status_code == 200
    token = code(key_hex, steps_ahead=1)
    assert _login("localhost", "operator", "pw-operator", token)[1].status_code == 302


def test_a_tenant_created_by_the_operators_can_require_it_from_the_start(
    tenants: dict[str, Tenant], db: None
) -> None:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator")
    operator, _ = _login("localhost", "operator", "pw-operator")
    response = operator.post(
        "/admin/tenants/tenant/add/",
        {
            "name": "Gamma",
            "schema_name": "gamma",
            "domain": "gamma.localhost",
            "timezone": "Europe/Warsaw",
            "default_country": "PL",
            "language": "pl",
            "require_two_factor": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Tenant.objects.get(schema_name="gamma").require_two_factor is True
