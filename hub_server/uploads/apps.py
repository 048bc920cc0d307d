from django.apps import AppConfig


class UploadsConfig(AppConfig):
    name = "hub_server.uploads"
    label = "uploads"
    verbose_name = "Uploads and hosted files"
