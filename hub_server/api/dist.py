"""Views of the legacy AdapterHub index under /dist/v2/: a client of the original hub works by
changing only its base URL. Responses are cached until the catalogue changes."""

from django.conf import settings
from django.http import JsonResponse
from django.urls import reverse

from hub_server.catalog import legacy_index
from hub_server.catalog.cache import cached_view


def _public_base(request) -> str:
    return settings.HUB_PUBLIC_URL or f"{request.scheme}://{request.get_host()}"


def _url_builder(request):
    base = _public_base(request)

    def url_for(org: str, name: str, version: str) -> str:
        return base + reverse(
            "adapter-version-download", kwargs={"org": org, "name": name, "version": version}
        )

    return url_for


def _not_found(detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": {}}, status=404)


def _json(document) -> JsonResponse:
    return JsonResponse(document, safe=False, json_dumps_params={"sort_keys": True})


@cached_view("dist", vary=_public_base)
def adapter_file(request, org: str, name: str):
    document = legacy_index.adapter_document(org, name, _url_builder(request))
    if document is None:
        return _not_found(f"no adapter @{org}/{name} on this hub")
    return _json(document)


@cached_view("dist", vary=_public_base)
def model_index(request, model_name: str):
    document = legacy_index.model_index(model_name)
    if document is None:
        return _not_found(f"no adapters for model {model_name!r} on this hub")
    return _json(document)


@cached_view("dist")
def architectures(request):
    return _json(legacy_index.architectures_document())


@cached_view("dist")
def all_adapters(request):
    return _json(legacy_index.all_document())
