from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "hub_server.catalog"
    label = "catalog"
    verbose_name = "Adapter catalogue"

    def ready(self):
        from hub_server.catalog import cache  # noqa: F401 - connects the invalidation receiver
