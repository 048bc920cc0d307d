from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "hub_server.catalog"
    label = "catalog"
    verbose_name = "Adapter catalogue"
