"""The hub server: a Django project that serves the adapter catalogue."""

from hub_server.celery import app as celery_app

__all__ = ["celery_app"]
