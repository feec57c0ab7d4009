"""Local Bitrix24 REST "sandbox portal" served over real HTTPS (stdlib + trustme only).

    from bitrix24_sandbox import SandboxPortal
    portal = SandboxPortal(seed=True).start()
    requests.post(portal.webhook_url() + "crm.contact.get", json={"id": 12},
                  verify=portal.ca_cert_path)

Behaviour follows the official Bitrix24 REST docs (github.com/bitrix24/b24restdocs); seed data
is described in ``seed.py``, the control API in ``control_api.py``.
"""

from __future__ import annotations

from .control import SandboxControl
from .portal import SandboxPortal

__all__ = ["SandboxControl", "SandboxPortal"]
