"""Config dataclasses, config strings and the config hash."""

from .adapter_config import (
    DEFAULT_ADAPTER_CONFIG,
    AdapterConfig,
    AdapterPlusConfig,
    BnConfig,
    CompacterConfig,
    CompacterPlusPlusConfig,
    ConfigUnion,
    DoubleSeqBnConfig,
    DoubleSeqBnInvConfig,
    ParBnConfig,
    SeqBnConfig,
    SeqBnInvConfig,
    config_identifiers,
    register_config,
)
from .config_string import parse_config_string
from .fusion_config import (
    DEFAULT_ADAPTERFUSION_CONFIG,
    AdapterFusionConfig,
    DynamicAdapterFusionConfig,
    StaticAdapterFusionConfig,
)
from .hashing import get_adapter_config_hash
from .lora_config import DoRAConfig, DvoRAConfig, IA3Config, LoRAConfig, VeraConfig
from .mtl_lora_config import MTLLoRAConfig
from .prefix_config import MAMConfig, PrefixTuningConfig, UniPELTConfig
from .prompt_tuning_config import PromptTuningConfig
from .reft_config import DiReftConfig, LoReftConfig, NoReftConfig, ReftConfig

# Old names kept by the reference library
PfeifferConfig = SeqBnConfig
HoulsbyConfig = DoubleSeqBnConfig
PfeifferInvConfig = SeqBnInvConfig
HoulsbyInvConfig = DoubleSeqBnInvConfig
ParallelConfig = ParBnConfig

__all__ = [
    "DEFAULT_ADAPTER_CONFIG",
    "DEFAULT_ADAPTERFUSION_CONFIG",
    "DoRAConfig",
    "DvoRAConfig",
    "IA3Config",
    "MAMConfig",
    "PrefixTuningConfig",
    "UniPELTConfig",
    "LoRAConfig",
    "VeraConfig",
    "ReftConfig",
    "PromptTuningConfig",
    "MTLLoRAConfig",
    "LoReftConfig",
    "NoReftConfig",
    "DiReftConfig",
    "AdapterConfig",
    "AdapterFusionConfig",
    "AdapterPlusConfig",
    "BnConfig",
    "CompacterConfig",
    "CompacterPlusPlusConfig",
    "ConfigUnion",
    "DoubleSeqBnConfig",
    "DoubleSeqBnInvConfig",
    "DynamicAdapterFusionConfig",
    "HoulsbyConfig",
    "HoulsbyInvConfig",
    "ParBnConfig",
    "ParallelConfig",
    "PfeifferConfig",
    "PfeifferInvConfig",
    "SeqBnConfig",
    "SeqBnInvConfig",
    "StaticAdapterFusionConfig",
    "config_identifiers",
    "get_adapter_config_hash",
    "parse_config_string",
    "register_config",
]
