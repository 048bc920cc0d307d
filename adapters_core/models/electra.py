"""ELECTRA: BERT's layer layout under the ``electra`` prefix."""

from .bert import BERT_STACKS
from .spec import ArchitectureSpec

SPEC = ArchitectureSpec(
    model_type="electra",
    base_model_prefix="electra",
    base_model_class="transformers:ElectraModel",
    stacks=BERT_STACKS,
    # the embeddings may be narrower than the layers (embedding_size): the encoder's input
    embeddings="encoder:input",
)
