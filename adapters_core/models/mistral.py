"""Mistral: Llama's layout (the reference's Mistral mixin is Llama's)."""

from dataclasses import replace

from .llama import SPEC as LLAMA_SPEC

SPEC = replace(LLAMA_SPEC, model_type="mistral", base_model_class="transformers:MistralModel")
