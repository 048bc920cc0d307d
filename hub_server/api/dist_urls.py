"""Routes of the legacy AdapterHub index under /dist/v2/."""

from django.urls import path, re_path

from hub_server.api import dist

urlpatterns = [
    path("architectures.json", dist.architectures, name="dist-architectures"),
    path("all.json", dist.all_adapters, name="dist-all"),
    path("adapters/<str:org>/<str:name>.json", dist.adapter_file, name="dist-adapter"),
    # A model name with "/" (an HF org) is a sub-folder of index/.
    re_path(r"^index/(?P<model_name>.+)\.json$", dist.model_index, name="dist-index"),
]
