"""An index for the list's main browse path: one task's adapters for one base model, most
downloaded first (`/api/v1/adapters/?task=...&model_name=...`, the Explore pages).

Partial on active adapters (the only ones listings show), ending in the primary key like the list's
ordering, so a page is an index range scan with LIMIT and its COUNT an index scan. Plain SQL (as
0002) so that the model's Meta, owned by the catalogue, needs no change.
"""

from django.db import migrations

CREATE = (
    "CREATE INDEX IF NOT EXISTS adapter_task_model_dl ON catalog_adapter "
    "(task_id, model_name, downloads DESC, id) WHERE status = 'active'"
)
DROP = "DROP INDEX IF EXISTS adapter_task_model_dl"


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_adapter_search_trgm")]

    operations = [migrations.RunSQL(CREATE, DROP)]
