"""Routes of the legacy AdapterHub index under /dist/v2/."""

urlpatterns: list = []
