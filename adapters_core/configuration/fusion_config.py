"""AdapterFusion configs (``static`` and ``dynamic``, the default)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AdapterConfigError
from .adapter_config import AdapterConfig


@dataclass(kw_only=True, eq=False)
class AdapterFusionConfig(AdapterConfig):
    """Fields of ``adapters`` 1.3.0 ``AdapterFusionConfig``."""

    key: bool
    query: bool
    value: bool
    query_before_ln: bool
    regularization: bool
    residual_before: bool
    temperature: bool
    value_before_softmax: bool
    value_initialized: bool
    dropout_prob: float | None = None

    @classmethod
    def load(cls, config: Any = None, **overrides: Any) -> AdapterFusionConfig:  # type: ignore[override]
        if config is None:
            config = DEFAULT_ADAPTERFUSION_CONFIG
        if isinstance(config, AdapterFusionConfig):
            loaded = config
        elif isinstance(config, str):
            preset = FUSION_CONFIG_MAP.get(config)
            if preset is None:
                raise AdapterConfigError(
                    f"Unknown fusion config {config!r}; known: {', '.join(FUSION_CONFIG_MAP)}."
                )
            loaded = preset()
        elif isinstance(config, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            data = {k: v for k, v in config.items() if k != "architecture"}
            unknown = sorted(set(data) - names)
            if unknown:
                raise AdapterConfigError(f"Unknown fusion config field(s) {unknown}.")
            base = DynamicAdapterFusionConfig().to_dict()
            base.update(data)
            loaded = AdapterFusionConfig(**base)
        else:
            raise AdapterConfigError(f"Cannot load a fusion config from {config!r}.")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return loaded.replace(**overrides) if overrides else loaded  # type: ignore[return-value]


@dataclass(kw_only=True, eq=False)
class StaticAdapterFusionConfig(AdapterFusionConfig):
    key: bool = True
    query: bool = True
    value: bool = False
    query_before_ln: bool = False
    regularization: bool = False
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = False


@dataclass(kw_only=True, eq=False)
class DynamicAdapterFusionConfig(AdapterFusionConfig):
    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = True


FUSION_CONFIG_MAP = {"static": StaticAdapterFusionConfig, "dynamic": DynamicAdapterFusionConfig}
DEFAULT_ADAPTERFUSION_CONFIG = "dynamic"
