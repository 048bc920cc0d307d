"""DistilBERT: post-norm layers that add residual and norm in their own forward: hooks."""

from .spec import ArchitectureSpec, LayerStack, LinearSpec, hooked, qkv_linears

SPEC = ArchitectureSpec(
    model_type="distilbert",
    base_model_prefix="distilbert",
    base_model_class="transformers:DistilBertModel",
    stacks=(
        LayerStack(
            "layers",
            "transformer.layer",
            (
                hooked(
                    "mh_adapter", "attention_adapters", "attention", "attention", "sa_layer_norm"
                ),
                hooked("output_adapter", "output_adapters", "ffn", "ffn", "output_layer_norm"),
            ),
            (
                *qkv_linears("attention", ("q_lin", "k_lin", "v_lin", "out_lin")),
                LinearSpec("ffn.lin1", "intermediate"),
                LinearSpec("ffn.lin2", "output"),
            ),
        ),
    ),
    embeddings="embeddings",
    hidden_size_attr="dim",
)
