"""Routes of the Hugging Face Hub compatible subset under /hf/ (see hub_server/api/hf.py)."""

from django.urls import path, re_path

from hub_server.api import hf

urlpatterns: list = [
    path("api/models", hf.list_models, name="hf-models"),
    path("api/models/<str:org>/<str:name>", hf.model_info, name="hf-model"),
    path("api/models/<str:org>/<str:name>/revision/<path:rev>", hf.model_info, name="hf-revision"),
    path("api/models/<str:org>/<str:name>/tree/<str:rev>", hf.tree, name="hf-tree"),
    path("api/models/<str:org>/<str:name>/tree/<str:rev>/<path:folder>", hf.tree),
    path("api/whoami-v2", hf.whoami, name="hf-whoami"),
    path("api/agent-harnesses", hf.agent_harnesses),
    path("<str:org>/<str:name>/resolve/<str:rev>/<path:path>", hf.resolve, name="hf-resolve"),
    re_path(r"^.*$", hf.not_found),
]
