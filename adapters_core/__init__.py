"""adapters_core: adapters for Hugging Face transformers, file-compatible with ``adapters`` 1.3.0.

import adapters_core
from adapters_core import AutoAdapterModel, Stack, Fuse

model = AutoAdapterModel.from_pretrained("path/to/bert")
model.add_adapter("task", config="seq_bn")
model.add_classification_head("task", num_labels=2)
model.train_adapter("task")
"""

from .composition import (
    AdapterCompositionBlock,
    Average,
    BatchSplit,
    Fuse,
    MultiTask,
    Parallel,
    Split,
    Stack,
    parse_composition,
)
from .configuration import (
    DEFAULT_ADAPTER_CONFIG,
    DEFAULT_ADAPTERFUSION_CONFIG,
    AdapterConfig,
    AdapterFusionConfig,
    AdapterPlusConfig,
    BnConfig,
    CompacterConfig,
    CompacterPlusPlusConfig,
    ConfigUnion,
    DoubleSeqBnConfig,
    DoubleSeqBnInvConfig,
    DynamicAdapterFusionConfig,
    HoulsbyConfig,
    HoulsbyInvConfig,
    ParallelConfig,
    ParBnConfig,
    PfeifferConfig,
    PfeifferInvConfig,
    SeqBnConfig,
    SeqBnInvConfig,
    StaticAdapterFusionConfig,
    get_adapter_config_hash,
)
from .context import AdapterSetup, ForwardContext
from .errors import (
    AdapterConfigError,
    AdapterError,
    AdapterLoadError,
    AdapterNotFoundError,
    ChecksumMismatchError,
    CompositionError,
    CorruptWeightsError,
    UnsafeArchiveError,
    UnsafeWeightsError,
)
from .heads import MultiHeadOutput
from .model_mixin import ModelAdaptersConfig, ModelAdaptersMixin, init
from .models.adapter_model import (
    AutoAdapterModel,
    BertAdapterModel,
    RobertaAdapterModel,
    XLMRobertaAdapterModel,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADAPTER_CONFIG",
    "DEFAULT_ADAPTERFUSION_CONFIG",
    "AdapterCompositionBlock",
    "AdapterConfig",
    "AdapterConfigError",
    "AdapterError",
    "AdapterFusionConfig",
    "AdapterLoadError",
    "AdapterNotFoundError",
    "AdapterPlusConfig",
    "AdapterSetup",
    "AutoAdapterModel",
    "Average",
    "MultiTask",
    "BatchSplit",
    "BertAdapterModel",
    "BnConfig",
    "ChecksumMismatchError",
    "CompacterConfig",
    "CompacterPlusPlusConfig",
    "CompositionError",
    "ConfigUnion",
    "CorruptWeightsError",
    "DoubleSeqBnConfig",
    "DoubleSeqBnInvConfig",
    "DynamicAdapterFusionConfig",
    "ForwardContext",
    "Fuse",
    "HoulsbyConfig",
    "HoulsbyInvConfig",
    "ModelAdaptersConfig",
    "ModelAdaptersMixin",
    "MultiHeadOutput",
    "Parallel",
    "ParallelConfig",
    "ParBnConfig",
    "PfeifferConfig",
    "PfeifferInvConfig",
    "RobertaAdapterModel",
    "SeqBnConfig",
    "SeqBnInvConfig",
    "Split",
    "Stack",
    "StaticAdapterFusionConfig",
    "UnsafeArchiveError",
    "UnsafeWeightsError",
    "XLMRobertaAdapterModel",
    "get_adapter_config_hash",
    "init",
    "parse_composition",
]
