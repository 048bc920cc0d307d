"""Routes of the Hugging Face Hub compatible subset under /hf/."""

urlpatterns: list = []
