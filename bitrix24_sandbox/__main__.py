"""``python -m bitrix24_sandbox --port 8443``: run a sandbox portal without Django."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
