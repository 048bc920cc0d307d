"""mBART: BART with pre-norm layers."""

from dataclasses import replace

from .bart import SPEC as BART_SPEC
from .bart import bart_stacks

SPEC = replace(
    BART_SPEC,
    model_type="mbart",
    base_model_class="transformers:MBartModel",
    stacks=bart_stacks(pre_norm=True),
)
