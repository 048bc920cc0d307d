"""The config hash of the legacy AdapterHub index (``config_id`` in ``dist/v2``).

The hash is the first 16 hex digits of the sha1 of the minimized config (falsy values dropped,
recursively) dumped as JSON with sorted keys; it is the key the index files use, so it must be
identical to the original Hub's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HASH_IGNORED_DEFAULTS",
    "minimize",
    "config_hash",
    "config_hash_candidates",
    "get_adapter_config_hash",
]

# Fields added to BnConfig after the Hub froze its hashes. `adapters` drops them from a config
# before hashing when they hold these defaults, so that a full config dict matches the index.
HASH_IGNORED_DEFAULTS: dict[str, Any] = {
    "phm_layer": False,
    "phm_dim": 4,
    "factorized_phm_W": True,
    "shared_W_phm": False,
    "shared_phm_rule": True,
    "factorized_phm_rule": False,
    "phm_c_init": "normal",
    "phm_init_range": 0.0001,
    "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "phm_rank": 1,
    "phm_bias": True,
    "init_weights": "bert",
    "scaling": 1.0,
}


def minimize(value: Any) -> Any:
    """Drop every falsy value from mappings, recursively (lists are kept as they are)."""
    if isinstance(value, Mapping):
        return {key: minimize(item) for key, item in value.items() if item}
    return value


def config_hash(config: Mapping[str, Any], length: int = 16) -> str:
    """The Hub's config hash: ``sha1(json.dumps(minimize(config), sort_keys=True))[:16]``."""
    text = json.dumps(minimize(config), sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def _strip_ignored_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in config.items()
        if not (key in HASH_IGNORED_DEFAULTS and value == HASH_IGNORED_DEFAULTS[key])
    }


def _as_dict(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"expected a config dict or config object, got {type(config).__name__}")


def get_adapter_config_hash(config: Any, length: int = 16, ignore_params: tuple = ()) -> str:
    """The hash `adapters` computes for a config object or dict before looking it up.

    Like :func:`config_hash`, after dropping the HASH_IGNORED_DEFAULTS fields that hold their
    defaults and any ``ignore_params``.
    """
    stripped = _strip_ignored_defaults(_as_dict(config))
    for name in ignore_params:
        stripped.pop(name, None)
    return config_hash(stripped, length=length)


def config_hash_candidates(config: Any) -> list[str]:
    """Hashes under which ``config`` may be indexed: as given, then with defaults ignored.

    A config written out in full by a newer library (all BnConfig fields) only matches the
    index once the fields in HASH_IGNORED_DEFAULTS that still hold their defaults are removed.
    """
    config = _as_dict(config)
    hashes = [config_hash(config)]
    alternative = get_adapter_config_hash(config)
    if alternative not in hashes:
        hashes.append(alternative)
    return hashes
