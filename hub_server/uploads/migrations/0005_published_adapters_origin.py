"""Adapters published through this hub before their origin was recorded: every adapter with a
version a published upload brought is the hub's own (catalog 0008), so no sync of the Hub
repository withdraws it any more."""

from django.db import migrations


def mark_published(apps, schema_editor):
    Adapter = apps.get_model("catalog", "Adapter")
    Adapter.objects.filter(versions__uploads__status="published").update(origin="published")


class Migration(migrations.Migration):
    dependencies = [
        ("uploads", "0004_versionfile_moved_to_catalog"),
        ("catalog", "0008_adapter_origin"),
    ]

    operations = [migrations.RunPython(mark_published, migrations.RunPython.noop)]
