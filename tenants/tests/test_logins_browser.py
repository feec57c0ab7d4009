"""The admin under its Content-Security-Policy, in Chromium: two-factor enrolment and login, the
pages with scripts (a device's token page, Swagger UI), and not one policy violation."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_otp.oath import totp
from django_tenants.utils import schema_context

from accounts.models import TotpDevice
from calls.models import Device

pytestmark = pytest.mark.browser

# Every violation a page sees, whoever caused it (an inline script, a style, an image...), as a
# console error: the console is collected across pages, a page's own variables are not.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def _wipe() -> None:
    with schema_context("alpha"):
        TotpDevice.objects.filter(user__username="csp-admin").delete()
        Device.objects.filter(name="CSP phone").delete()
        User.objects.filter(username="csp-admin").delete()


def _code(secret: str, *, steps_ahead: int = 0) -> str:
    secret = secret.replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return f"{totp(key, drift=steps_ahead):06d}"


def test_the_admin_works_under_its_content_security_policy(
    committed_db: Callable, web_server: int, browser: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    committed_db(_wipe)
    with schema_context("alpha"):
        User.objects.create_superuser("csp-admin", password="pw-csp")
    base = f"http://alpha.localhost:{web_server}"
    console_errors: list[str] = []

    with browser() as page:
        page.add_init_script(REPORT_VIOLATIONS)

        def on_console(message: Any) -> None:
            if message.type == "error":
                console_errors.append(message.text)

        page.on("console", on_console)

        response = page.goto(f"{base}/admin/")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.fill("#id_username", "csp-admin")
        page.fill("#id_password", "pw-csp")
        page.click("input[type=submit]")
        expect(page.locator("#site-name")).to_contain_text("SIMtrix")

        # Turn two-factor on from the user links, reading the key as a user types it in.
        page.click("#two-factor-link")
        expect(page.locator("#two-factor-qr svg")).to_be_visible()
        secret = page.locator("#two-factor-secret").inner_text()
        page.fill("#id_otp_token", _code(secret))
        page.click("#two-factor-form input[type=submit]")
        expect(page.locator(".messagelist")).to_contain_text("Two-factor authentication is on")

        # Out, and in again: now with the code.
        page.click("#logout-form button")
        page.goto(f"{base}/admin/")
        page.fill("#id_username", "csp-admin")
        page.fill("#id_password", "pw-csp")
        page.click("input[type=submit]")
        # The same answer as a wrong password (tenants.twofactor.TwoFactorLoginForm).
        expect(page.locator(".errornote")).to_contain_text("current code of your authenticator")
        page.fill("#id_password", "pw-csp")
        page.fill("#id_otp_token", _code(secret, steps_ahead=1))
        page.click("input[type=submit]")
        expect(page.locator("#user-tools")).to_contain_text("csp-admin")

        # The admin's own scripts: the sidebar, a changelist with its actions, a change form.
        for path in ("/admin/calls/call/", "/admin/scenarios/scenario/", "/admin/calls/device/"):
            page.goto(f"{base}{path}")
            expect(page.locator("#content")).to_be_visible()
        page.goto(f"{base}/admin/calls/device/add/")
        page.fill("#id_name", "CSP phone")
        page.fill("#id_phone_number", "+48500100555")
        page.fill("#id_bitrix24_user_id", "5")
        page.click("input[name=_save]")
        token = page.locator("input.simtrix-token")
        expect(token).to_be_visible()
        token.click()  # SIMtrix's admin.js selects it all, for copying
        selected = page.evaluate(
            "() => { const f = document.querySelector('input.simtrix-token');"
            " return [f.selectionStart, f.selectionEnd, f.value.length]; }"
        )
        start, end, length = selected
        assert (start, end) == (0, length), selected
        assert length > 20

        # The bridge API's docs: Swagger UI starts from a script file, not an inline one.
        page.goto(f"{base}/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("SIMtrix bridge API")
        expect(page.locator(".opblock").first).to_be_visible()

    violations = [e for e in console_errors if re.search("CSP violation|Content Security", e)]
    assert violations == [], violations
    with schema_context("alpha"):
        assert TotpDevice.objects.filter(user__username="csp-admin", confirmed=True).count() == 1
