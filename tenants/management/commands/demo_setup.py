from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from calls.models import Device
from calls.services import device_register, device_rotate_token
from crm.services import connection_set_events_token, connection_set_webhook
from scenarios.choices import ActionType, Trigger
from scenarios.models import RoutingCondition, RoutingRule, Scenario, ScenarioAction
from tenants.management.jsoncommand import JsonCommand
from tenants.management.secret_input import SecretOption, secret_options_read
from tenants.models import Tenant
from tenants.services import TenantSpec, tenant_provision, tenant_public_ensure

DEMO_SCHEMA = "demo"
DEMO_DOMAIN = "demo.localhost"
# The agents of the sandbox portal's seed who carry the demo phones.
DEMO_DEVICES = [("Marta's phone", "+48500100200", 5), ("Ewa's phone", "+48500100300", 9)]
WEBHOOK = SecretOption("--bitrix24-webhook", "SIMTRIX_BITRIX24_WEBHOOK", "Bitrix24 webhook URL")
EVENTS_TOKEN = SecretOption(
    "--bitrix24-events-token",
    "SIMTRIX_BITRIX24_EVENTS_TOKEN",
    "the application token of the portal's outbound webhook (click-to-call)",
)


class Command(JsonCommand):
    help = "Makes (or refreshes) the demo tenant of `make run`: admin user, devices, Bitrix24 URL."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(WEBHOOK.option, default=None, help=WEBHOOK.help)
        parser.add_argument(EVENTS_TOKEN.option, default=None, help=EVENTS_TOKEN.help)
        parser.add_argument(
            "--state-file", default=str(Path(settings.BASE_DIR) / ".devdata" / "demo.json")
        )

    def run(self, **options: Any) -> dict[str, Any]:
        stdin = options.get("stdin") or sys.stdin
        secrets_read = secret_options_read(options, [WEBHOOK, EVENTS_TOKEN], stdin=stdin)
        webhook, events_token = secrets_read[WEBHOOK.dest], secrets_read[EVENTS_TOKEN.dest]
        if not webhook:
            raise self.fail(f"The demo needs a webhook: {WEBHOOK.option} - or ${WEBHOOK.variable}.")
        state_file = Path(options["state_file"])
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        state.setdefault("username", "admin")
        state.setdefault("password", secrets.token_urlsafe(9))

        tenant_public_ensure()
        if not Tenant.objects.filter(schema_name=DEMO_SCHEMA).exists():
            tenant_provision(
                TenantSpec(
                    schema=DEMO_SCHEMA, name="Demo", domain=DEMO_DOMAIN,
                    bitrix24_webhook=webhook, timezone="Europe/Warsaw",
                    country="PL",
                )
            )  # fmt: skip
        for schema in ("public", DEMO_SCHEMA):
            with schema_context(schema):
                _superuser_ensure(state["username"], state["password"])
        with schema_context(DEMO_SCHEMA):
            connection_set_webhook(webhook_url=webhook)
            if events_token:
                connection_set_events_token(token=events_token)
            tokens = []
            for name, number, user_id in DEMO_DEVICES:
                device = Device.objects.filter(name=name).first()
                if device is None:
                    _, token = device_register(
                        name=name, phone_number=number, bitrix24_user_id=user_id, country="PL"
                    )
                else:
                    # Tokens are never stored in clear: the demo gets fresh ones every run.
                    token = device_rotate_token(device=device)
                tokens.append(token)
            _missed_call_sms_ensure()
            _routing_rule_ensure()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state))
        return {
            "schema": DEMO_SCHEMA,
            "domain": DEMO_DOMAIN,
            "username": state["username"],
            "password": state["password"],
            "device_token": tokens[0],
            "device_tokens": tokens,
        }


def _missed_call_sms_ensure() -> None:
    """The demo shows SMS through the phones: a missed call texts the caller back (the
    simulated phone answers the send_sms command; the SMS list shows it)."""
    missed = Scenario.objects.filter(trigger=Trigger.INCOMING_MISSED).first()
    if missed is None or missed.actions.filter(action_type=ActionType.SEND_SMS).exists():
        return
    last = missed.actions.order_by("-position").values_list("position", flat=True).first() or 0
    ScenarioAction.objects.create(
        scenario=missed,
        position=last + 10,
        action_type=ActionType.SEND_SMS,
        text_template="Sorry we missed your call - we will call you back soon. {agent}",
    )


def _routing_rule_ensure() -> None:
    """A rule to try in the demo: calls from companies go to Marta (user 5); the rest as the
    "Others" fallback says. The routing page's test box shows why."""
    rule, created = RoutingRule.objects.get_or_create(
        name="Companies to Marta",
        defaults={"position": 10, "target": RoutingRule.Target.USER, "users": [5]},
    )
    if created:
        RoutingCondition.objects.create(
            rule=rule,
            position=0,
            source=RoutingCondition.Source.ENTITY_TYPE,
            operator=RoutingCondition.Operator.EQUALS,
            values=["company"],
        )


def _superuser_ensure(username: str, password: str) -> None:
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user_model.objects.create_superuser(username, password=password)
    elif not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
