"""BART: post-norm encoder-decoder; the decoder has a cross-attention location.

Layers are numbered as the reference numbers them: encoder 0..n-1, then decoder n..."""

from .spec import (
    SEQ2SEQ_HEADS,
    ArchitectureSpec,
    LayerStack,
    LinearSpec,
    hooked,
    qkv_linears,
)

ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")
FFN = (LinearSpec("fc1", "intermediate"), LinearSpec("fc2", "output"))


def bart_stacks(pre_norm: bool) -> tuple[LayerStack, LayerStack]:
    """BART (post-norm) or mBART (pre-norm: residual at the norm's input, no post-norm)."""

    def loc(key: str, container: str, output: str, norm: str) -> object:
        if pre_norm:
            return hooked(key, container, output, norm)
        return hooked(key, container, output, output, norm)

    mh = loc("mh_adapter", "attention_adapters", "self_attn", "self_attn_layer_norm")
    cross = loc(
        "cross_adapter", "cross_attention_adapters", "encoder_attn", "encoder_attn_layer_norm"
    )
    out = (
        hooked("output_adapter", "output_adapters", "fc2", "final_layer_norm")
        if pre_norm
        else hooked("output_adapter", "output_adapters", "fc2", "fc1", "final_layer_norm")
    )
    encoder = LayerStack(
        "encoder", "encoder.layers", (mh, out), (*qkv_linears("self_attn", ATTN), *FFN)
    )  # type: ignore[arg-type]
    decoder = LayerStack(
        "decoder",
        "decoder.layers",
        (mh, cross, out),  # type: ignore[arg-type]
        (
            *qkv_linears("self_attn", ATTN),
            *qkv_linears("encoder_attn", ATTN, "crossattn"),
            *FFN,
        ),
    )
    return encoder, decoder


SPEC = ArchitectureSpec(
    model_type="bart",
    base_model_prefix="model",
    base_model_class="transformers:BartModel",
    kind="encoder-decoder",
    stacks=bart_stacks(pre_norm=False),
    embeddings="encoder.layernorm_embedding",
    invertible_stack="encoder",
    pooling="eos",
    head_types=SEQ2SEQ_HEADS,
)
