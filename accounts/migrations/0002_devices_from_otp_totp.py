"""Devices enrolled with django-otp's TOTPDevice (plain keys) move here, encrypted; its table goes.

SIMtrix used django_otp.plugins.otp_totp before accounts.TotpDevice. Runs in every schema
(public, then each tenant's): where that schema has the old table, each device is copied with its
state (so nobody enrols again, and a code already used stays used), then the table is dropped so
no dump holds a plain key any more. Nothing to do on a database created after the switch.
Backwards does nothing (0001's reversal drops the devices; the keys are not put back in clear).
"""

from django.db import migrations

OLD_TABLE = "otp_totp_totpdevice"
COLUMNS = (
    "user_id",
    "name",
    "confirmed",
    "key",
    "step",
    "t0",
    "digits",
    "tolerance",
    "drift",
    "last_t",
    "throttling_failure_timestamp",
    "throttling_failure_count",
    "created_at",
    "last_used_at",
)


def devices_move_from_otp_totp(apps, schema_editor) -> None:
    connection = schema_editor.connection
    # This schema's own table only: a tenant's search_path also sees public's (the operators').
    schema = getattr(connection, "schema_name", None) or "public"
    table = f"{schema_editor.quote_name(schema)}.{schema_editor.quote_name(OLD_TABLE)}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [table])
        if cursor.fetchone()[0] is None:
            return
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY id")  # noqa: S608
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]
    device_model = apps.get_model("accounts", "TotpDevice")
    for row in rows:
        created_at = row.pop("created_at")
        device = device_model.objects.create(**row)  # the key field encrypts it
        # auto_now_add set "now" on create; the enrolment date is the old one.
        device_model.objects.filter(pk=device.pk).update(created_at=created_at)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {table}")
        cursor.execute("DELETE FROM django_migrations WHERE app = 'otp_totp'")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(devices_move_from_otp_totp, migrations.RunPython.noop)]
