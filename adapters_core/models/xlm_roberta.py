"""XLM-RoBERTa: where adapters go. Same layout as RoBERTa."""

from dataclasses import replace

from .roberta import SPEC as ROBERTA_SPEC
from .spec import StaticHeadSpec

SPEC = replace(
    ROBERTA_SPEC,
    model_type="xlm-roberta",
    base_model_class="transformers:XLMRobertaModel",
    static_heads={
        name.replace("Roberta", "XLMRoberta"): StaticHeadSpec(h.head_config, h.layers)
        for name, h in ROBERTA_SPEC.static_heads.items()
    },
)
