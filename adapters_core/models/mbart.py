"""mBART: BART with pre-norm layers."""

from .bart import bart_stacks
from .spec import SEQ2SEQ_HEADS, ArchitectureSpec

SPEC = ArchitectureSpec(
    model_type="mbart",
    base_model_prefix="model",
    base_model_class="transformers:MBartModel",
    kind="encoder-decoder",
    stacks=bart_stacks(pre_norm=True),
    embeddings="encoder.layernorm_embedding",
    invertible_stack="encoder",
    pooling="eos",
    head_types=SEQ2SEQ_HEADS,
)
