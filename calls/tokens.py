"""Device tokens: random, prefixed so they are recognisable in a leak, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "stx_"  # noqa: S105 - a public marker, not a secret


def token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # A 256-bit random token needs no slow password hash: SHA-256 cannot be brute-forced here.
    return hashlib.sha256(token.encode()).hexdigest()
