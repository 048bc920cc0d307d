"""VersionFile (the files a hosted version serves) is a catalogue fact: the model moves from the
uploads app to the catalogue. The table is renamed, not copied, so every row survives `migrate`
(and `migrate catalog 0006` renames it back); uploads 0004 drops the model from the uploads state.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0006_adapterversion_frozen_hf_revision"),
        ("uploads", "0003_upload_claim_queue_and_purge"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE uploads_versionfile RENAME TO catalog_versionfile",
                    "ALTER TABLE catalog_versionfile RENAME TO uploads_versionfile",
                ),
            ],
            state_operations=[
                migrations.CreateModel(
                    name="VersionFile",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("path", models.CharField(max_length=255)),
                        ("size", models.PositiveBigIntegerField()),
                        ("sha256", models.CharField(max_length=64)),
                        ("git_oid", models.CharField(max_length=40)),
                        ("storage_key", models.CharField(max_length=500)),
                        (
                            "version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="files",
                                to="catalog.adapterversion",
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["version_id", "path"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("version", "path"), name="uniq_file_per_version"
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
