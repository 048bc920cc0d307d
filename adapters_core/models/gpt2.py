"""GPT-2: pre-norm decoder; fused QKV ``c_attn`` and all projections are transformers Conv1D."""

from .spec import DECODER_HEADS, ArchitectureSpec, LayerStack, LinearSpec, hooked

SPEC = ArchitectureSpec(
    model_type="gpt2",
    base_model_prefix="transformer",
    base_model_class="transformers:GPT2Model",
    kind="decoder",
    stacks=(
        LayerStack(
            "layers",
            "h",
            (
                hooked("mh_adapter", "attention_adapters", "attn", "ln_1"),
                hooked("output_adapter", "output_adapters", "mlp", "ln_2"),
            ),
            (
                LinearSpec("attn.c_attn", "selfattn", fused=("q", "k", "v"), conv1d=True),
                LinearSpec("attn.c_proj", "selfattn", "o", conv1d=True),
                LinearSpec("mlp.c_fc", "intermediate", conv1d=True),
                LinearSpec("mlp.c_proj", "output", conv1d=True),
            ),
        ),
    ),
    embeddings="drop",
    pooling="last",
    head_types=DECODER_HEADS,
)
