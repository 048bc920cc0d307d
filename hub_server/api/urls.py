"""Routes of the native REST API under /api/v1/."""

urlpatterns: list = []
