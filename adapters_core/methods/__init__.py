"""Adapter method families. Adding a method = a new file here plus one entry in METHODS."""

from .base import Activation, AdapterMethod
from .bottleneck import BottleneckAdapter, BottleneckMethod, ParallelBottleneckAdapter
from .fusion import AdapterFusionLayer
from .invertible import GLOWCouplingBlock, InvertibleMethod, NICECouplingBlock
from .lora import LoRALayerMixin
from .lora_method import LoRAMethod
from .mtl_lora import TaskIdsArgument
from .prefix_tuning import PrefixTuningMethod
from .prompt_tuning import PromptTuningMethod
from .reft import ReftMethod

# Order matters only for attach(); each method builds modules for the configs it handles.
METHODS: list[AdapterMethod] = [BottleneckMethod(), InvertibleMethod(), LoRAMethod()]
METHODS.append(PrefixTuningMethod())
METHODS.append(ReftMethod())
METHODS.append(PromptTuningMethod())
METHODS.append(TaskIdsArgument())

__all__ = [
    "METHODS",
    "Activation",
    "AdapterFusionLayer",
    "AdapterMethod",
    "BottleneckAdapter",
    "BottleneckMethod",
    "GLOWCouplingBlock",
    "InvertibleMethod",
    "LoRALayerMixin",
    "LoRAMethod",
    "NICECouplingBlock",
    "ParallelBottleneckAdapter",
    "PrefixTuningMethod",
    "PromptTuningMethod",
    "ReftMethod",
]
