"""Static files: whitenoise's compressed manifest storage once collectstatic has run, plain names
before.

The image runs collectstatic at build (Dockerfile), so production serves hashed, compressed
names that browsers may cache forever. A checkout has no manifest: `make run` (DEBUG, which
never hashes) and the tests (DEBUG off, no collectstatic) would fail on every `{% static %}`
with the strict manifest storage, so without a manifest names stay as they are, and a process
that is not in DEBUG says once that collectstatic has not run.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from whitenoise.storage import (  # type: ignore[import-untyped]
    CompressedManifestStaticFilesStorage,
)

logger = logging.getLogger(__name__)


class ManifestOrPlainStaticFilesStorage(CompressedManifestStaticFilesStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.hashed_files and not settings.DEBUG:
            logger.info(
                "No staticfiles manifest in %s: static files keep their plain names "
                "(run `manage.py collectstatic` for hashed, cacheable ones)",
                self.location,
            )

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:
            return name
        return super().stored_name(name)
