"""The connection's secrets become encrypted text (common.crypto), existing rows encrypted.

Runs in every tenant schema (django-tenants runs tenant migrations schema by schema). Values
already encrypted are left alone, so a migration interrupted half-way, or a row written by the
new code before this ran, is safe. Backwards decrypts them again (while the key is configured).
"""

from collections.abc import Callable

from django.db import migrations, models

import common.crypto
import crm.validators

# The columns that were plain text before this migration (events_token is new: never plain).
SECRET_COLUMNS = (
    "webhook_url",
    "oauth_client_secret",
    "oauth_access_token",
    "oauth_refresh_token",
    "oauth_application_token",
)


def _rewrite(apps, schema_editor, transform: Callable[[str], str]) -> None:
    model = apps.get_model("crm", "Bitrix24Connection")
    quote = schema_editor.quote_name
    table = quote(model._meta.db_table)
    with schema_editor.connection.cursor() as cursor:
        # Identifiers from the model's metadata, quoted; every value is a parameter.
        cursor.execute(f"SELECT id, {', '.join(map(quote, SECRET_COLUMNS))} FROM {table}")  # noqa: S608
        for row_id, *values in cursor.fetchall():
            new = [transform(value) if value else value for value in values]
            if new != values:
                assignments = ", ".join(f"{quote(column)} = %s" for column in SECRET_COLUMNS)
                cursor.execute(
                    f"UPDATE {table} SET {assignments} WHERE id = %s",  # noqa: S608
                    [*new, row_id],
                )


def secrets_encrypt(apps, schema_editor) -> None:
    _rewrite(apps, schema_editor, common.crypto.secret_encrypt_if_plain)


def secrets_decrypt(apps, schema_editor) -> None:
    _rewrite(apps, schema_editor, common.crypto.secret_decrypt)


class Migration(migrations.Migration):

    dependencies = [
        ("crm", "0003_directory_fields_timeman"),
    ]

    operations = [
        migrations.AlterField(
            model_name="bitrix24connection",
            name="webhook_url",
            field=common.crypto.EncryptedTextField(blank=True, max_length=500, validators=[crm.validators.validate_webhook_url], verbose_name="webhook URL"),
        ),
        migrations.AlterField(
            model_name="bitrix24connection",
            name="oauth_client_secret",
            field=common.crypto.EncryptedTextField(blank=True, max_length=256, verbose_name="client secret"),
        ),
        migrations.AlterField(
            model_name="bitrix24connection",
            name="oauth_access_token",
            field=common.crypto.EncryptedTextField(blank=True, editable=False, max_length=256),
        ),
        migrations.AlterField(
            model_name="bitrix24connection",
            name="oauth_refresh_token",
            field=common.crypto.EncryptedTextField(blank=True, editable=False, max_length=256),
        ),
        migrations.AlterField(
            model_name="bitrix24connection",
            name="oauth_application_token",
            field=common.crypto.EncryptedTextField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="bitrix24connection",
            name="events_token",
            field=common.crypto.EncryptedTextField(blank=True, editable=False, help_text="The application_token of the portal's outbound webhook.", max_length=128, verbose_name="events token"),
        ),
        migrations.AlterField(
            model_name="bitrix24connection",
            name="oauth_token_url",
            field=models.CharField(default="https://oauth.bitrix.info/oauth/token/", help_text="Where tokens are refreshed; Bitrix24 cloud uses oauth.bitrix.info.", max_length=300, validators=[crm.validators.validate_oauth_token_url], verbose_name="OAuth token URL"),
        ),
        migrations.RunPython(secrets_encrypt, secrets_decrypt),
    ]
