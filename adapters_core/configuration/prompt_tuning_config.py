"""Prompt tuning (Lester et al., 2021): its config, as ``adapters`` 1.3.0 writes it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdapterConfigError
from .adapter_config import AdapterConfig, register_config

PROMPT_INITS = ("random_uniform", "from_string")
COMBINES = ("prefix", "prefix_after_bos")


@dataclass(kw_only=True, eq=False)
class PromptTuningConfig(AdapterConfig):
    """``prompt_length`` soft tokens put in front of the input (``combine="prefix"``) or right
    after its first token (``"prefix_after_bos"``). ``prompt_init``: ``"random_uniform"`` in
    ``[-random_uniform_scale, random_uniform_scale]``, or ``"from_string"``: the embeddings of
    ``prompt_init_text``'s tokens (repeated to ``prompt_length``; the tokenizer is the model's
    ``tokenizer_name_or_path`` or ``name_or_path``)."""

    architecture = "prompt_tuning"

    prompt_length: int = 10
    prompt_init: str = "random_uniform"
    prompt_init_text: str | None = None
    random_uniform_scale: float = 0.5
    combine: str = "prefix"
    init_weights_seed: int | None = None

    def _validate(self) -> None:
        n = self.prompt_length
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise AdapterConfigError(f"prompt_length must be a positive integer, got {n!r}.")
        if self.prompt_init not in PROMPT_INITS:
            raise AdapterConfigError(
                f"Unknown prompt_init {self.prompt_init!r} (expected one of {PROMPT_INITS})."
            )
        if self.prompt_init == "from_string" and not self.prompt_init_text:
            raise AdapterConfigError("prompt_init='from_string' needs prompt_init_text.")
        if self.combine not in COMBINES:
            raise AdapterConfigError(
                f"Unknown combine {self.combine!r} (expected one of {COMBINES})."
            )

    @property
    def insert_at(self) -> int:
        """Index in the sequence where the prompt goes."""
        return 1 if self.combine == "prefix_after_bos" else 0


register_config("prompt_tuning", PromptTuningConfig, presets={"prompt_tuning": PromptTuningConfig})
