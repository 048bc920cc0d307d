"""Adapter configs: immutable mapping-like dataclasses, a registry of identifiers, and ``load``.

New method families register their config class with :func:`register_config` from their own
file (``architecture`` key + preset identifiers); nothing here needs to change for them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Union

from ..errors import AdapterConfigError
from .config_string import parse_config_string

ConfigLike = Union["AdapterConfig", Mapping[str, Any], str, PathLike, None]


class AdapterConfig(Mapping):
    """Base class of method configs. Instances are frozen; use :meth:`replace` to change them."""

    architecture: ClassVar[str | None] = None

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise dataclasses.FrozenInstanceError(
                f"Cannot assign to field {name!r}: use replace()."
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"Cannot delete field {name!r}.")

    def __post_init__(self) -> None:
        self._validate()
        object.__setattr__(self, "_frozen", True)

    def _validate(self) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        # equal when they serialize the same, whatever preset class built them
        return isinstance(other, AdapterConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # Mapping interface over the serialized fields
    def __getitem__(self, key: str) -> Any:
        if key == "architecture" and self.architecture is not None:
            return self.architecture
        if key in self._field_names():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    @classmethod
    def _field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The ``config`` block of ``adapter_config.json``."""
        out: dict[str, Any] = {}
        for name in self._field_names():
            value = getattr(self, name)
            out[name] = _jsonable(value)
        if self.architecture is not None:
            out["architecture"] = self.architecture
        return out

    def replace(self, **changes: Any) -> AdapterConfig:
        unknown = set(changes) - set(self._field_names())
        if unknown:
            raise AdapterConfigError(
                f"Unknown field(s) {sorted(unknown)} for {type(self).__name__}."
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AdapterConfig:
        """Build the config class named by ``config['architecture']`` (bottleneck if absent)."""
        data = dict(config)
        arch = data.pop("architecture", None)
        target = _class_for_architecture(arch)
        if target is ConfigUnion:
            return ConfigUnion(*[AdapterConfig.from_dict(c) for c in data.get("configs", [])])
        return target._build(data)

    @classmethod
    def _build(cls, data: dict[str, Any]) -> AdapterConfig:
        names = set(cls._field_names())
        unknown = sorted(set(data) - names)
        if unknown:
            raise AdapterConfigError(f"Unknown field(s) {unknown} for {cls.__name__}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise AdapterConfigError(f"Invalid {cls.__name__}: {exc}") from exc

    @classmethod
    def load(cls, config: ConfigLike, **overrides: Any) -> AdapterConfig:
        """Accepts a config object, a dict, a config string / identifier, or a path to JSON."""
        if config is None:
            config = DEFAULT_ADAPTER_CONFIG
        if isinstance(config, AdapterConfig):
            loaded = config
        elif isinstance(config, Mapping):
            loaded = AdapterConfig.from_dict(config)
        elif isinstance(config, PathLike) or (
            isinstance(config, str) and config.endswith(".json") and Path(config).is_file()
        ):
            with open(config, encoding="utf-8") as f:
                data = json.load(f)
            loaded = AdapterConfig.from_dict(data.get("config", data))
        elif isinstance(config, str):
            loaded = _from_string(config)
        else:
            raise AdapterConfigError(f"Cannot load an adapter config from {config!r}.")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            loaded = loaded.replace(**overrides)
        return loaded


def _jsonable(value: Any) -> Any:
    if isinstance(value, AdapterConfig):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True, eq=False)
class BnConfig(AdapterConfig):
    """Bottleneck adapter config; every field of ``adapters`` 1.3.0 ``BnConfig``."""

    mh_adapter: bool
    output_adapter: bool
    reduction_factor: float | Mapping[str, float]
    non_linearity: str
    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    init_weights_seed: int | None = None
    is_parallel: bool = False
    scaling: float | str = 1.0
    use_gating: bool = False
    residual_before_ln: bool | str = True
    adapter_residual_before_ln: bool = False
    inv_adapter: str | None = None
    inv_adapter_reduction_factor: float | None = None
    cross_adapter: bool = False
    leave_out: list[int] = field(default_factory=list)
    dropout: float = 0.0
    phm_layer: bool = False
    phm_dim: int = 4
    factorized_phm_W: bool | None = True
    shared_W_phm: bool | None = False
    shared_phm_rule: bool | None = True
    factorized_phm_rule: bool | None = False
    phm_c_init: str | None = "normal"
    phm_init_range: float | None = 0.0001
    learn_phm: bool | None = True
    hypercomplex_nonlinearity: str | None = "glorot-uniform"
    phm_rank: int | None = 1
    phm_bias: bool | None = True
    stochastic_depth: float | None = 0.0

    def _validate(self) -> None:
        rf = self.reduction_factor
        if isinstance(rf, Mapping):
            for k, v in rf.items():
                if not isinstance(v, int | float) or v <= 0:
                    raise AdapterConfigError(f"reduction_factor[{k!r}] must be a positive number.")
        elif not isinstance(rf, int | float) or isinstance(rf, bool) or rf <= 0:
            raise AdapterConfigError(f"reduction_factor must be a positive number, got {rf!r}.")
        if self.init_weights not in ("bert", "mam_adapter", "houlsby"):
            raise AdapterConfigError(f"Unknown init_weights {self.init_weights!r}.")
        if not (isinstance(self.scaling, int | float) or self.scaling in ("learned", "channel")):
            raise AdapterConfigError(f"Unknown scaling {self.scaling!r}.")
        if self.residual_before_ln not in (True, False, "post_add"):
            raise AdapterConfigError(f"Invalid residual_before_ln {self.residual_before_ln!r}.")
        if self.inv_adapter not in (None, "nice", "glow"):
            raise AdapterConfigError(f"Unknown inv_adapter {self.inv_adapter!r}.")
        if isinstance(self.leave_out, tuple):
            object.__setattr__(self, "leave_out", list(self.leave_out))
        if isinstance(self.scaling, int) and not isinstance(self.scaling, bool):
            object.__setattr__(self, "scaling", float(self.scaling))

    @classmethod
    def _build(cls, data: dict[str, Any]) -> AdapterConfig:
        # v1 files describe the invertible adapter as a nested dict
        inv = data.pop("invertible_adapter", None)
        if isinstance(inv, Mapping):
            data.setdefault("inv_adapter", inv.get("block_type"))
            data.setdefault("inv_adapter_reduction_factor", inv.get("reduction_factor"))
        return super()._build(data)

    def reduction_factor_for(self, layer_idx: int) -> float:
        rf = self.reduction_factor
        if isinstance(rf, Mapping):
            if str(layer_idx) in rf:
                return rf[str(layer_idx)]
            if "default" in rf:
                return rf["default"]
            raise AdapterConfigError(
                "The reduction_factor mapping has no entry for layer "
                f"{layer_idx} and no 'default': {dict(rf)!r}"
            )
        return rf


@dataclass(kw_only=True, eq=False)
class SeqBnConfig(BnConfig):
    """Pfeiffer et al. (2020): one bottleneck after the FFN."""

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 16
    non_linearity: str = "relu"
    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: bool | str = True


@dataclass(kw_only=True, eq=False)
class SeqBnInvConfig(SeqBnConfig):
    inv_adapter: str | None = "nice"
    inv_adapter_reduction_factor: float | None = 2


@dataclass(kw_only=True, eq=False)
class DoubleSeqBnConfig(BnConfig):
    """Houlsby et al. (2019): bottlenecks after attention and after the FFN."""

    mh_adapter: bool = True
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 16
    non_linearity: str = "swish"
    original_ln_before: bool = False
    original_ln_after: bool = True
    residual_before_ln: bool | str = True


@dataclass(kw_only=True, eq=False)
class DoubleSeqBnInvConfig(DoubleSeqBnConfig):
    inv_adapter: str | None = "nice"
    inv_adapter_reduction_factor: float | None = 2


@dataclass(kw_only=True, eq=False)
class ParBnConfig(BnConfig):
    """He et al. (2021): a parallel bottleneck."""

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 2
    non_linearity: str = "relu"
    original_ln_before: bool = False
    original_ln_after: bool = True
    residual_before_ln: bool | str = True
    init_weights: str = "mam_adapter"
    is_parallel: bool = True
    scaling: float | str = 4.0


@dataclass(kw_only=True, eq=False)
class AdapterPlusConfig(BnConfig):
    """Steitz & Roth (2024)."""

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 96
    non_linearity: str = "gelu"
    original_ln_before: bool = True
    original_ln_after: bool = False
    residual_before_ln: bool | str = False
    stochastic_depth: float | None = 0.1
    init_weights: str = "houlsby"
    scaling: float | str = "channel"


@dataclass(kw_only=True, eq=False)
class CompacterPlusPlusConfig(BnConfig):
    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 32
    non_linearity: str = "gelu"
    original_ln_before: bool = True
    phm_layer: bool = True


@dataclass(kw_only=True, eq=False)
class CompacterConfig(BnConfig):
    mh_adapter: bool = True
    output_adapter: bool = True
    reduction_factor: float | Mapping[str, float] = 32
    non_linearity: str = "gelu"
    phm_layer: bool = True


class ConfigUnion(AdapterConfig):
    """Several method configs applied together (``"a|b"``); serialized as ``architecture: union``."""

    architecture: ClassVar[str | None] = "union"

    def __init__(self, *configs: AdapterConfig) -> None:
        flat: list[AdapterConfig] = []
        for c in configs:
            flat.extend(c.configs if isinstance(c, ConfigUnion) else [c])
        self._check(flat)
        object.__setattr__(self, "configs", flat)
        object.__setattr__(self, "_frozen", True)

    @staticmethod
    def _check(configs: list[AdapterConfig]) -> None:
        for i, a in enumerate(configs):
            if not isinstance(a, AdapterConfig):
                raise AdapterConfigError(f"{a!r} is not an adapter config.")
            for b in configs[i + 1 :]:
                if a.architecture != b.architecture:
                    continue
                if a.get("leave_out") or b.get("leave_out"):
                    continue
                if isinstance(a, BnConfig) and isinstance(b, BnConfig):
                    overlap = (a.mh_adapter and b.mh_adapter) or (
                        a.output_adapter and b.output_adapter
                    )
                    if not overlap:
                        continue
                raise AdapterConfigError(
                    f"Cannot combine two configs of architecture {a.architecture or 'bottleneck'}"
                    " in a ConfigUnion unless their locations are complementary."
                )

    @classmethod
    def _field_names(cls) -> list[str]:
        return ["configs"]

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": "union", "configs": [c.to_dict() for c in self.configs]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigUnion) and self.configs == other.configs

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"ConfigUnion({', '.join(map(repr, self.configs))})"

    def replace(self, **changes: Any) -> AdapterConfig:
        return ConfigUnion(*[c.replace(**changes) for c in self.configs])


_CONFIG_BY_ARCHITECTURE: dict[str | None, type[AdapterConfig]] = {
    None: BnConfig,
    "bottleneck": BnConfig,
    "union": ConfigUnion,
}
_CONFIG_BY_IDENTIFIER: dict[str, type[AdapterConfig] | AdapterConfig] = {}
_ALIASES: dict[str, str] = {}

DEFAULT_ADAPTER_CONFIG = "seq_bn"


def register_config(
    architecture: str | None,
    config_class: type[AdapterConfig],
    presets: Mapping[str, type[AdapterConfig] | AdapterConfig] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> None:
    """Register a method family's config class (by ``architecture``) and its identifiers."""
    _CONFIG_BY_ARCHITECTURE.setdefault(architecture, config_class)
    _CONFIG_BY_IDENTIFIER.update(presets or {})
    _ALIASES.update(aliases or {})


register_config(
    None,
    BnConfig,
    presets={
        "seq_bn": SeqBnConfig,
        "double_seq_bn": DoubleSeqBnConfig,
        "par_bn": ParBnConfig,
        "scaled_par_bn": ParBnConfig(scaling="learned"),
        "seq_bn_inv": SeqBnInvConfig,
        "double_seq_bn_inv": DoubleSeqBnInvConfig,
        "adapter_plus": AdapterPlusConfig,
        "compacter": CompacterConfig,
        "compacter++": CompacterPlusPlusConfig,
    },
    aliases={
        "pfeiffer": "seq_bn",
        "houlsby": "double_seq_bn",
        "parallel": "par_bn",
        "scaled_parallel": "scaled_par_bn",
        "pfeiffer+inv": "seq_bn_inv",
        "houlsby+inv": "double_seq_bn_inv",
    },
)


def _class_for_architecture(arch: str | None) -> type[AdapterConfig]:
    if arch in _CONFIG_BY_ARCHITECTURE:
        return _CONFIG_BY_ARCHITECTURE[arch]
    known = sorted(str(a) for a in _CONFIG_BY_ARCHITECTURE if a)
    raise AdapterConfigError(
        f"Unknown adapter architecture {arch!r}; known: bottleneck (no key), {', '.join(known)}."
    )


def _identifier_config(name: str) -> AdapterConfig:
    key = _ALIASES.get(name, name)
    entry = _CONFIG_BY_IDENTIFIER.get(key)
    if entry is None:
        known = sorted(set(_CONFIG_BY_IDENTIFIER) | set(_ALIASES))
        raise AdapterConfigError(
            f"Unknown adapter config identifier {name!r}; known: {', '.join(known)}."
        )
    return entry if isinstance(entry, AdapterConfig) else entry()


def _from_string(text: str) -> AdapterConfig:
    parts = []
    for name, overrides in parse_config_string(text):
        base = _identifier_config(name)
        parts.append(base.replace(**overrides) if overrides else base)
    return parts[0] if len(parts) == 1 else ConfigUnion(*parts)


def config_identifiers() -> list[str]:
    """All config identifiers and aliases accepted by :meth:`AdapterConfig.load`."""
    return sorted(set(_CONFIG_BY_IDENTIFIER) | set(_ALIASES))
