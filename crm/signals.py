"""Signals other apps listen to (crm knows nothing of what they configure)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after a directory sync committed, in the tenant's schema. Keyword argument `removed`:
# how many rows of each kind were newly marked removed ({"users": 0, "stages": 1, ...}).
directory_synced = Signal()
