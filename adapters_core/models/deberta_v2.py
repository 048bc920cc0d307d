"""DeBERTa-v2/v3: BERT-style sub-blocks; attention projections named ``*_proj``."""

from .spec import ArchitectureSpec, LayerStack, LinearSpec, bert_style_locations, qkv_linears

SPEC = ArchitectureSpec(
    model_type="deberta-v2",
    base_model_prefix="deberta",
    base_model_class="transformers:DebertaV2Model",
    stacks=(
        LayerStack(
            "layers",
            "encoder.layer",
            bert_style_locations(),
            (
                *qkv_linears(
                    "attention",
                    ("self.query_proj", "self.key_proj", "self.value_proj", "output.dense"),
                ),
                LinearSpec("intermediate.dense", "intermediate"),
                LinearSpec("output.dense", "output"),
            ),
        ),
    ),
    embeddings="embeddings",
)
