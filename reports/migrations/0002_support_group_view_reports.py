"""Lets the tenant's view-only "Support" group read the reports. Tenants provisioned later get
the same through `calls.services.support_group_ensure()`."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT_GROUP = "Support"
VIEW_MODELS = [
    "overviewreport",
    "missedhoursreport",
    "notreturnedreport",
    "callbackreport",
    "teamreport",
]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("reports")
    # Historical app configs have no models module, which create_permissions takes for "no
    # models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="reports", codename__in=[f"view_{m}" for m in VIEW_MODELS]
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
