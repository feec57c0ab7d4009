"""Pytest fixtures for the Bitrix24 sandbox portal (loaded by the root conftest)."""

from __future__ import annotations
