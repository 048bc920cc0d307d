"""`catalog_changed` is sent after a sync or a publish commits a change; caches listen to it."""

from django.dispatch import Signal

catalog_changed = Signal()
