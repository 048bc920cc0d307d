"""T5: pre-norm encoder-decoder without LayerNorm in the residual path.

Adapters live in the sub-layer modules themselves (``block.<i>.layer.<j>.adapters``, as the
reference saves them): ``layer.0`` self-attention, decoder ``layer.1`` cross-attention, the
last ``layer`` the feed-forward block. Each is hooked on its dropout (the sub-layer output)
with the residual at its ``layer_norm``'s input."""

from .spec import SEQ2SEQ_HEADS, ArchitectureSpec, LayerStack, LinearSpec, hooked, qkv_linears


def _sub(key: str, j: int) -> object:
    return hooked(key, f"layer.{j}", f"layer.{j}.dropout", f"layer.{j}.layer_norm")


def _ffn(j: int) -> tuple[LinearSpec, LinearSpec]:
    return (
        LinearSpec(f"layer.{j}.DenseReluDense.wi", "intermediate"),
        LinearSpec(f"layer.{j}.DenseReluDense.wo", "output"),
    )


QKVO = ("q", "k", "v", "o")

SPEC = ArchitectureSpec(
    model_type="t5",
    base_model_prefix="transformer",
    base_model_class="transformers:T5Model",
    kind="encoder-decoder",
    stacks=(
        LayerStack(
            "encoder",
            "encoder.block",
            (_sub("mh_adapter", 0), _sub("output_adapter", 1)),  # type: ignore[arg-type]
            (*qkv_linears("layer.0.SelfAttention", QKVO), *_ffn(1)),
        ),
        LayerStack(
            "decoder",
            "decoder.block",
            (_sub("mh_adapter", 0), _sub("cross_adapter", 1), _sub("output_adapter", 2)),  # type: ignore[arg-type]
            (
                *qkv_linears("layer.0.SelfAttention", QKVO),
                *qkv_linears("layer.1.EncDecAttention", QKVO, "crossattn"),
                *_ffn(2),
            ),
        ),
    ),
    embeddings="encoder.block.0:input",
    invertible_stack="encoder",
    hidden_size_attr="d_model",
    pooling="eos",
    head_types=SEQ2SEQ_HEADS,
)
