"""A trigram index for the API's `q` search (PostgreSQL only; elsewhere search scans).

The indexed expression must stay identical to `hub_server.catalog.filters.AdapterSearchText`, which
the search filter compares with LIKE '%term%': then PostgreSQL answers it from this index.
"""

import logging

from django.db import migrations

log = logging.getLogger(__name__)

SEARCH_EXPRESSION = (
    "lower(org || '/' || name || ' ' || model_name || ' ' || author || ' ' || description)"
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SAVEPOINT trgm")
        try:
            # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except Exception as exc:  # noqa: BLE001 - search works without the index, only slower
            cursor.execute("ROLLBACK TO SAVEPOINT trgm")
            log.warning("pg_trgm unavailable, search will scan: %s", exc)
            return
        cursor.execute(
            "CREATE INDEX IF NOT EXISTS adapter_search_trgm ON catalog_adapter "
            f"USING gin (({SEARCH_EXPRESSION}) gin_trgm_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS adapter_search_trgm")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(create_index, drop_index)]
