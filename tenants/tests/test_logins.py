"""The login lockout on both admins: per user and address and tenant; operators lift it."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth.models import User
from django.test import Client
from django_tenants.utils import schema_context
from pytest_django import Settings

from calls.services import device_register
from tenants.models import Tenant

ATTACKER = "203.0.113.7"
OFFICE = "198.51.100.20"


def _login(host: str, username: str, password: str, address: str = ATTACKER) -> int:
    response = Client(HTTP_HOST=host, REMOTE_ADDR=address).post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
    )
    return response.status_code


def _lock(host: str, username: str, address: str = ATTACKER) -> list[int]:
    return [_login(host, username, f"wrong-{i}", address) for i in range(5)]


@pytest.fixture
def same_name_at_both(tenants: dict[str, Tenant], db: None) -> None:
    """An "admin" at alpha and another, unrelated, "admin" at beta."""
    for schema in ("alpha", "beta"):
        with schema_context(schema):
            User.objects.create_superuser("admin", password=f"pw-{schema}")


def test_five_wrong_passwords_lock_that_user_from_that_address_only(
    same_name_at_both: None, settings: Settings
) -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    statuses = _lock("alpha.localhost", "admin")
    assert statuses == [200, 200, 200, 200, 429]  # the login form again, then the lockout page

    # Even the right password is refused now, from that address.
    assert _login("alpha.localhost", "admin", "pw-alpha") == 429
    # The office logs in as the same user; beta's "admin" is another person and is not locked.
    assert _login("alpha.localhost", "admin", "pw-alpha", address=OFFICE) == 302
    assert _login("beta.localhost", "admin", "pw-beta") == 302

    with schema_context("public"):
        attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address) == ("alpha:admin", ATTACKER)
    assert attempt.failures_since_start >= 5


def test_an_ipv6_lockout_covers_the_whole_64(same_name_at_both: None) -> None:
    """Inside its /64 a client picks any address: the lockout is the subscriber's, not one
    address's (common.http.address_counted)."""
    assert _lock("alpha.localhost", "admin", address="2001:db8:1:2::1")[-1] == 429

    assert _login("alpha.localhost", "admin", "pw-alpha", address="2001:db8:1:2::2") == 429
    assert _login("alpha.localhost", "admin", "pw-alpha", address="2001:db8:1:2:dead::9") == 429
    assert _login("alpha.localhost", "admin", "pw-alpha", address="2001:db8:1:3::1") == 302
    with schema_context("public"):
        attempt = AccessAttempt.objects.get(username="alpha:admin")
    assert attempt.ip_address == "2001:db8:1:2::"  # a valid address in axes' inet column


def test_the_lockout_page_is_a_page_of_the_admin_not_an_error(same_name_at_both: None) -> None:
    _lock("alpha.localhost", "admin")
    response = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=ATTACKER).post(
        "/admin/login/", {"username": "admin", "password": "pw-alpha"}
    )
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins for this user from your address" in page
    assert "refused for 15 minutes" in page
    assert "your SIMtrix" in page  # a tenant's admin is told whom to ask
    assert '<div id="site-name"><a href="/admin/">SIMtrix</a></div>' in page
    assert "pw-alpha" not in page


def test_a_successful_login_forgets_earlier_failures(same_name_at_both: None) -> None:
    for i in range(4):
        assert _login("alpha.localhost", "admin", f"wrong-{i}") == 200
    assert _login("alpha.localhost", "admin", "pw-alpha") == 302
    with schema_context("public"):
        assert not AccessAttempt.objects.filter(username="alpha:admin").exists()
    # Four more failures do not lock: the count started again.
    assert [_login("alpha.localhost", "admin", f"again-{i}") for i in range(4)] == [200] * 4


def test_operators_are_locked_out_of_their_admin_too(tenants: dict, db: None) -> None:
    with schema_context("public"):
        User.objects.create_superuser("admin", password="pw-operator")
    assert _lock("localhost", "admin") == [200, 200, 200, 200, 429]
    assert _login("localhost", "admin", "pw-operator") == 429
    with schema_context("public"):
        assert AccessAttempt.objects.get().username == "public:admin"


def _operator(address: str = OFFICE) -> Client:
    with schema_context("public"):
        User.objects.create_superuser("operator", password="pw-operator-1")
    client = Client(HTTP_HOST="localhost", REMOTE_ADDR=address)
    response = client.post("/admin/login/", {"username": "operator", "password": "pw-operator-1"})
    assert response.status_code == 302
    return client


def test_an_operator_sees_the_lockout_and_lifts_it(same_name_at_both: None) -> None:
    _lock("alpha.localhost", "admin")
    _lock("beta.localhost", "admin")
    operator = _operator()

    listing = operator.get("/admin/axes/accessattempt/?locked_out=yes").content.decode()
    assert "alpha:admin" in listing
    assert "beta:admin" in listing
    assert ATTACKER in listing
    history = operator.get("/admin/axes/accessfailurelog/").content.decode()
    assert "alpha:admin" in history

    with schema_context("public"):
        alpha_attempt = AccessAttempt.objects.get(username="alpha:admin")
    response = operator.post(
        "/admin/axes/accessattempt/",
        {"action": "lift_lockout", "_selected_action": [str(alpha_attempt.pk)]},
        follow=True,
    )
    assert f"alpha:admin from {ATTACKER} may log in again" in response.content.decode()

    assert _login("alpha.localhost", "admin", "pw-alpha") == 302
    assert _login("beta.localhost", "admin", "pw-beta") == 429  # only what was selected
    with schema_context("public"):
        # The history stays for the operators.
        assert AccessFailureLog.objects.filter(username="alpha:admin").count() == 5


def test_a_tenant_admin_never_sees_the_lockouts(same_name_at_both: None) -> None:
    _lock("beta.localhost", "admin")
    client = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=OFFICE)
    login = client.post("/admin/login/", {"username": "admin", "password": "pw-alpha"})
    assert login.status_code == 302
    assert client.get("/admin/").status_code == 200
    for url in ("/admin/axes/accessattempt/", "/admin/axes/accessfailurelog/"):
        assert client.get(url).status_code == 404, url
    assert "beta:admin" not in client.get("/admin/").content.decode()
    assert "Access attempts" not in client.get("/admin/").content.decode()


def test_the_bridge_api_is_not_behind_the_lockout(same_name_at_both: None) -> None:
    _lock("alpha.localhost", "admin")
    with schema_context("alpha"):
        _, token = device_register(
            name="Phone at the door", phone_number="+48500100999", bitrix24_user_id=5, country="PL"
        )
    response = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=ATTACKER).post(
        "/api/bridge/v1/heartbeat/",
        {"app_version": "1.4.0"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200, response.content


def test_without_a_cool_off_the_lockout_lasts_until_lifted(
    same_name_at_both: None, settings: Settings
) -> None:
    settings.AXES_COOLOFF_TIME = None  # SIMTRIX_LOGIN_COOLOFF_MINUTES=0
    _lock("alpha.localhost", "admin")
    response = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=ATTACKER).post(
        "/admin/login/", {"username": "admin", "password": "pw-alpha"}
    )
    assert response.status_code == 429
    assert "refused until the lockout is lifted" in response.content.decode()
