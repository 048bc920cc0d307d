"""ModernBERT: written by the reference through its plugin interface (adapter_interface.json).

As that interface does: the attention adapter is hooked on ``attn.Wo`` with the residual taken
at the input of ``attn`` (already normed) and ``mlp_norm`` as its layer norm; the output adapter
on ``mlp.Wo`` with the residual at the input of ``mlp``. Fused QKV ``attn.Wqkv``.
"""

from .spec import ArchitectureSpec, LayerStack, LinearSpec, hooked

SPEC = ArchitectureSpec(
    model_type="modernbert",
    base_model_prefix="model",
    base_model_class="transformers:ModernBertModel",
    stacks=(
        LayerStack(
            "layers",
            "layers",
            (
                hooked("mh_adapter", "attention_adapters", "attn.Wo", "attn", "mlp_norm"),
                hooked("output_adapter", "output_adapters", "mlp.Wo", "mlp"),
            ),
            (
                LinearSpec("attn.Wqkv", "selfattn", fused=("q", "k", "v")),
                LinearSpec("attn.Wo", "selfattn", "o"),
                LinearSpec("mlp.Wi", "intermediate"),
                LinearSpec("mlp.Wo", "output"),
            ),
        ),
    ),
    embeddings="embeddings",
    plugin=True,
)
