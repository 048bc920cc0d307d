"""VersionFile now belongs to the catalogue (catalog 0007 renamed its table): only the uploads
app's state forgets it; the database is not touched here."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("uploads", "0003_upload_claim_queue_and_purge"),
        ("catalog", "0007_versionfile_moved_from_uploads"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="VersionFile")],
        ),
    ]
