"""Routes of the Hugging Face Hub compatible subset under /hf/ (see hub_server/api/hf.py).

The repo reads (model info, tree, search) are served from the catalogue's response cache
(`catalog.cache.cached_view`) until the catalogue changes; file downloads stream from storage.
"""

from django.urls import path, re_path

from hub_server.api import hf, hf_write
from hub_server.catalog.cache import cached_view, origin

# A search's Link header is absolute: every cached /hf/ read varies by the client's origin.
# `params`: the query parameters each view reads (the cache keys hold only these).
models = cached_view("hf-models", vary=origin, params=hf.LIST_PARAMS)(hf.list_models)
model_info = cached_view("hf-model", vary=origin, params=("blobs", "expand"))(hf.model_info)
tree = cached_view("hf-tree", vary=origin)(hf.tree)

urlpatterns: list = [
    path("api/models", models, name="hf-models"),
    path("api/models/<str:org>/<str:name>", model_info, name="hf-model"),
    path("api/models/<str:org>/<str:name>/revision/<path:rev>", model_info, name="hf-revision"),
    path("api/models/<str:org>/<str:name>/tree/<str:rev>", tree, name="hf-tree"),
    path("api/models/<str:org>/<str:name>/tree/<str:rev>/<path:folder>", tree),
    path("api/repos/create", hf_write.create_repo, name="hf-create-repo"),
    path("api/validate-yaml", hf_write.validate_yaml),
    path("api/models/<str:org>/<str:name>/preupload/<str:rev>", hf_write.preupload),
    path("api/models/<str:org>/<str:name>/commit/<str:rev>", hf_write.commit, name="hf-commit"),
    path("api/models/<str:org>/<str:name>/commits/<str:rev>", hf_write.commits),
    path("api/whoami-v2", hf.whoami, name="hf-whoami"),
    path("api/agent-harnesses", hf.agent_harnesses),
    path("<str:org>/<str:name>/resolve/<str:rev>/<path:path>", hf.resolve, name="hf-resolve"),
    re_path(r"^.*$", hf.not_found),
]
