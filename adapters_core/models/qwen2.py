"""Qwen2: written by the reference through its plugin interface (adapter_interface.json).

Bottleneck locations are hooked on ``o_proj`` / ``mlp.down_proj`` with the residual taken at
the input norms, as that interface hooks them.
"""

from .spec import DECODER_HEADS, ArchitectureSpec, LayerStack, LinearSpec, hooked, qkv_linears

SPEC = ArchitectureSpec(
    model_type="qwen2",
    base_model_prefix="model",
    base_model_class="transformers:Qwen2Model",
    kind="decoder",
    stacks=(
        LayerStack(
            "layers",
            "layers",
            (
                hooked("mh_adapter", "attention_adapters", "self_attn.o_proj", "input_layernorm"),
                hooked(
                    "output_adapter", "output_adapters", "mlp.down_proj", "post_attention_layernorm"
                ),
            ),
            (
                *qkv_linears("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                LinearSpec("mlp.up_proj", "intermediate"),
                LinearSpec("mlp.down_proj", "output"),
            ),
        ),
    ),
    embeddings="embed_tokens",
    pooling="last",
    head_types=DECODER_HEADS,
    plugin=True,
    lm_model_class="transformers:Qwen2ForCausalLM",
)
