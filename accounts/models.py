"""An admin's authenticator app (TOTP), its key encrypted at rest.

django-otp's own TOTPDevice keeps the key (the seed every code is computed from) in a plain
column, so a database dump would hold every admin's second factor. This device behaves like it
(django_otp.plugins.otp_totp.models: the same fields, codes, replay protection and throttling)
but stores the key as a Fernet token (common.crypto). django-otp finds it like any other device:
`devices_for_user` looks through every installed model that subclasses `Device`.
"""

from __future__ import annotations

import time
from base64 import b32encode
from binascii import unhexlify
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from django_otp.util import hex_validator, random_hex

from common.crypto import EncryptedTextField


def totp_key_default() -> str:
    """20 random bytes, hex: the length authenticator apps expect of a SHA-1 key."""
    return random_hex(20)


def totp_key_validate(value: str) -> None:
    hex_validator()(value)


class TotpDevice(TimestampMixin, ThrottlingMixin, Device):
    """A TOTP authenticator app (RFC 6238): 6 digits, 30-second steps, one step either way.

    ``last_t`` is the step of the last code accepted: only a later one passes, so a code seen
    over a shoulder cannot be used a second time. A wrong code makes the next try wait longer
    (ThrottlingMixin). The key is never filtered on (it cannot be: it is encrypted randomly).
    """

    # django-otp's own fields, declared again with names the admin shows in Polish too (the
    # same columns: django-otp has no Polish catalog).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        verbose_name=_("user"),
        help_text=_("The user that this device belongs to."),
    )
    name = models.CharField(
        _("name"), max_length=64, help_text=_("The human-readable name of this device.")
    )
    confirmed = models.BooleanField(
        _("confirmed"), default=True, help_text=_("Is this device ready for use?")
    )
    throttling_failure_timestamp = models.DateTimeField(
        _("last failed attempt"),
        null=True,
        blank=True,
        default=None,
        help_text=_("When a code was last refused; empty once a code is accepted."),
    )
    throttling_failure_count = models.PositiveIntegerField(
        _("failed attempts"), default=0, help_text=_("Number of successive failed attempts.")
    )
    created_at = models.DateTimeField(
        _("created at"),
        null=True,
        blank=True,
        auto_now_add=True,
        help_text=_("When the device was added."),
    )
    last_used_at = models.DateTimeField(
        _("last used at"),
        null=True,
        blank=True,
        help_text=_("When a code from the device was last accepted."),
    )
    key = EncryptedTextField(
        _("key"),
        max_length=80,
        validators=[totp_key_validate],
        default=totp_key_default,
        help_text=_("A hex-encoded secret key of up to 40 bytes (stored encrypted)."),
    )
    step = models.PositiveSmallIntegerField(
        _("step"), default=30, help_text=_("The time step in seconds.")
    )
    t0 = models.BigIntegerField(
        _("t0"), default=0, help_text=_("The Unix time at which to begin counting steps.")
    )
    digits = models.PositiveSmallIntegerField(
        _("digits"),
        choices=[(6, 6), (8, 8)],
        default=6,
        help_text=_("The number of digits to expect in a code."),
    )
    tolerance = models.PositiveSmallIntegerField(
        _("tolerance"),
        default=1,
        help_text=_("The number of time steps in the past or future to allow."),
    )
    drift = models.SmallIntegerField(
        _("drift"),
        default=0,
        help_text=_("The number of time steps the app is known to deviate from our clock."),
    )
    last_t = models.BigIntegerField(
        _("last accepted step"),
        default=-1,
        help_text=_("The time step of the last code accepted; the next must be at a later one."),
    )

    class Meta(Device.Meta):
        verbose_name = _("authenticator app")
        verbose_name_plural = _("authenticator apps")

    @property
    def bin_key(self) -> bytes:
        return unhexlify(self.key.encode())

    def verify_token(self, token: Any) -> bool:
        """Whether `token` is the app's current code (not one used already); throttled."""

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            digits = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
            totp.time = time.time()
            verified = totp.verify(digits, self.tolerance, self.last_t + 1)
            if verified:
                self.last_t = totp.t()
                if getattr(settings, "OTP_TOTP_SYNC", True):
                    self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    def config_url_for(self, issuer: str) -> str:
        """The otpauth:// URI (the QR code) of this device, shown under `issuer` in the app.

        Key Uri Format: https://github.com/google/google-authenticator/wiki/Key-Uri-Format.
        """
        issuer = issuer.replace(":", "")
        label = quote(f"{issuer}:{self.user.get_username()}")
        params = urlencode(
            {
                "secret": b32encode(self.bin_key).decode().rstrip("="),
                "algorithm": "SHA1",
                "digits": self.digits,
                "period": self.step,
            }
        )
        return f"otpauth://totp/{label}?{params}&issuer={quote(issuer)}"

    @property
    def config_url(self) -> str:
        """As django-otp's: the issuer from ``OTP_TOTP_ISSUER`` (the enrolment page passes the
        host's instead, through `config_url_for`)."""
        return self.config_url_for(getattr(settings, "OTP_TOTP_ISSUER", None) or "SIMtrix")


class UserPreference(models.Model):
    """What a user of the admin chose for themselves: today the language of the admin.

    Kept per user in the user's own schema, so the choice follows them to every browser; the
    switcher also sets Django's language cookie, which speaks for a browser before login.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="simtrix_preference",
        verbose_name=_("user"),
    )
    language = models.CharField(
        _("language"),
        max_length=8,
        choices=settings.LANGUAGES,
        blank=True,
        help_text=_("The admin's language for this user; empty: the browser's."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("user preference")
        verbose_name_plural = _("user preferences")

    def __str__(self) -> str:
        return str(self.user)
