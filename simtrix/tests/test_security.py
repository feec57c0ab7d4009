"""Production defaults when DJANGO_DEBUG is off: TLS, cookies, HSTS, CSP, the proxy in front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.test import Client
from django_tenants.utils import schema_context
from pytest_django import Settings

from tenants.models import Tenant

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_SECRET = "q7#Vt2!pLx9@rM4$wZ8^kN1&bH6*cF3(dJ5)sG0-yA_eU=iO+T"  # 50 chars, varied

SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps("
    "{name: getattr(s, name, None) for name in ["
    "'DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', "
    "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', "
    "'SECURE_PROXY_SSL_HEADER', 'CSRF_TRUSTED_ORIGINS', 'SECURE_REDIRECT_EXEMPT', "
    "'X_FRAME_OPTIONS', 'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY']}))"
)


def _production_env(**overrides: str) -> dict[str, str]:
    """The environment of a real deployment: no test or development switch inherited."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SIMTRIX_", "DJANGO_", "PYTEST", "SENTRY_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "simtrix.settings",
            "DJANGO_SECRET_KEY": PRODUCTION_SECRET,
            "DJANGO_ALLOWED_HOSTS": ".simtrix.example,simtrix.example",
            "SIMTRIX_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "SIMTRIX_PROXY_SSL_HEADER": "X-Forwarded-Proto",
            "SIMTRIX_CSRF_TRUSTED_ORIGINS": "https://simtrix.example,https://*.simtrix.example",
        }
    )
    env.update(overrides)
    return {name: value for name, value in env.items() if value != ""}


def _settings(**overrides: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=REPO,
        env=_production_env(**overrides),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_in_a_production_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=_production_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_check_deploy_warns_about_what_a_lan_install_turns_off() -> None:
    # The switches for a plain-http install work: the deploy check names what they gave up.
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO,
        env=_production_env(
            SIMTRIX_SECURE_COOKIES="0", SIMTRIX_SSL_REDIRECT="0", SIMTRIX_HSTS_SECONDS="0"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output, warning


def test_production_defaults_when_debug_is_off() -> None:
    values = _settings()
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["CSRF_TRUSTED_ORIGINS"] == [
        "https://simtrix.example",
        "https://*.simtrix.example",
    ]
    assert {"^healthz$", "^readyz$"} <= set(values["SECURE_REDIRECT_EXEMPT"])
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["SECURE_REFERRER_POLICY"] == "same-origin"


def test_each_default_can_be_turned_off_for_a_plain_http_lan() -> None:
    values = _settings(
        SIMTRIX_SECURE_COOKIES="0",
        SIMTRIX_SSL_REDIRECT="0",
        SIMTRIX_HSTS_SECONDS="0",
        SIMTRIX_PROXY_SSL_HEADER="",
        SIMTRIX_CSRF_TRUSTED_ORIGINS="",
    )
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["CSRF_TRUSTED_ORIGINS"] == []


def test_development_has_none_of_it() -> None:
    values = _settings(DJANGO_DEBUG="1", SIMTRIX_PROXY_SSL_HEADER="")
    assert values["DEBUG"] is True
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0


def test_a_proxy_header_with_its_own_value() -> None:
    values = _settings(SIMTRIX_PROXY_SSL_HEADER="X-Forwarded-Ssl=on")
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]


# --- The headers, in this process ------------------------------------------------------------


@pytest.fixture
def behind_a_proxy(settings: Settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def test_plain_http_is_redirected_to_https_but_the_probes_are_not(
    behind_a_proxy: None, alpha: Tenant
) -> None:
    client = Client(HTTP_HOST="alpha.localhost")
    response = client.get("/admin/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://alpha.localhost/admin/login/"
    assert client.get("/healthz").status_code == 200
    # The proxy says the client spoke https: served, with HSTS for every tenant's subdomain.
    response = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_the_session_and_csrf_cookies_are_secure(alpha: Tenant) -> None:
    User.objects.create_superuser("admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost")
    page = client.get("/admin/login/")
    assert page.cookies["csrftoken"]["secure"] is True
    response = client.post("/admin/login/", {"username": "admin", "password": "pw"})
    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] is True
    assert response.cookies["sessionid"]["httponly"] is True


def test_every_page_has_the_content_security_policy(alpha: Tenant) -> None:
    client = Client(HTTP_HOST="alpha.localhost")
    for url in ("/admin/login/", "/api/docs/", "/healthz"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self';" in policy, url
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-eval" not in policy
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"
    # Swagger UI's start-up script is a file of its own, so 'self' covers it.
    docs = client.get("/api/docs/").content.decode()
    assert "<script>" not in docs
    assert client.get("/api/docs/?script=").status_code == 200


def test_an_admin_login_behind_a_tls_proxy_passes_the_csrf_check(
    behind_a_proxy: None, tenants: dict[str, Tenant], db: None
) -> None:
    """The browser posts to https://alpha..., the proxy to http://app: the Origin (https) must
    match what Django thinks the scheme is; without the proxy header it would not."""
    with schema_context("alpha"):
        User.objects.create_superuser("admin", password="pw")
    https: dict[str, Any] = {
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_ORIGIN": "https://alpha.localhost",
    }
    client = Client(HTTP_HOST="alpha.localhost", enforce_csrf_checks=True)
    token = client.get("/admin/login/", **https).cookies["csrftoken"].value
    response = client.post(
        "/admin/login/",
        {"username": "admin", "password": "pw", "csrfmiddlewaretoken": token},
        **https,
    )
    assert response.status_code == 302, response.content.decode()[:500]


def test_without_the_proxy_header_that_login_fails_the_csrf_check(
    settings: Settings, tenants: dict[str, Tenant], db: None
) -> None:
    # What the probe found: behind a TLS proxy, with no SIMTRIX_PROXY_SSL_HEADER, Django sees
    # http while the browser's Origin says https.
    settings.SECURE_PROXY_SSL_HEADER = None
    with schema_context("alpha"):
        User.objects.create_superuser("admin", password="pw")
    client = Client(HTTP_HOST="alpha.localhost", enforce_csrf_checks=True)
    token = client.get("/admin/login/").cookies["csrftoken"].value
    response = client.post(
        "/admin/login/",
        {"username": "admin", "password": "pw", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="https://alpha.localhost",
    )
    assert response.status_code == 403
