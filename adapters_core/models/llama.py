"""Llama: pre-norm decoder (RMSNorm), grouped-query attention.

The reference wraps ``mlp.down_proj`` as its "intermediate" and ``mlp.up_proj`` as its
"output" LoRA location (the other way round from what the names suggest); copied as data so
that LoRA files interchange.
"""

from .spec import DECODER_HEADS, ArchitectureSpec, LayerStack, LinearSpec, hooked, qkv_linears

LLAMA_STACKS = (
    LayerStack(
        "layers",
        "layers",
        (
            hooked("mh_adapter", "attention_adapters", "self_attn", "input_layernorm"),
            hooked("output_adapter", "output_adapters", "mlp", "post_attention_layernorm"),
        ),
        (
            *qkv_linears("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
            LinearSpec("mlp.down_proj", "intermediate"),
            LinearSpec("mlp.up_proj", "output"),
        ),
    ),
)

SPEC = ArchitectureSpec(
    model_type="llama",
    base_model_prefix="model",
    base_model_class="transformers:LlamaModel",
    kind="decoder",
    stacks=LLAMA_STACKS,
    embeddings="embed_tokens",
    pooling="last",
    head_types=DECODER_HEADS,
)
