"""Training helpers: ``AdapterTrainer`` (checkpoints hold adapters and heads, not the model)
and ``train_adapter_quick`` for small in-memory datasets."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from . import loading
from .composition import Fuse
from .errors import AdapterError
from .model_mixin import ModelAdaptersMixin, _fuse_names

logger = logging.getLogger(__name__)

TRAINING_ARGS_NAME = "training_args.bin"


class AdapterTrainer(Trainer):
    """A ``transformers.Trainer`` for adapter training.

    Call ``model.train_adapter(...)`` (or ``train_adapter_fusion``) first. Checkpoints contain
    one folder per adapter (and fusion and head) in the adapter folder format, the layout of the
    reference library's AdapterTrainer; resuming and ``load_best_model_at_end`` reload them.
    """

    def __init__(
        self, model: Any = None, args: TrainingArguments | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(model, ModelAdaptersMixin):
            raise AdapterError(
                "AdapterTrainer needs a model with adapter support: use AutoAdapterModel or "
                "adapters_core.init(model)."
            )
        if model.active_adapters is None:
            raise AdapterError("No active adapter: call model.train_adapter(name) before training.")
        super().__init__(model=model, args=args, **kwargs)
        # our heads compute the loss themselves; let the Trainer scale it for accumulation
        self.model_accepts_loss_kwargs = False
        if self.args.label_names is None:
            self.label_names = _label_names(model)

    @property
    def _trains_fusion(self) -> bool:
        return bool(_fuse_names(self.model.active_adapters)) or isinstance(
            self.model.active_adapters, Fuse
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = (
            self.accelerator.unwrap_model(self.model)
            if hasattr(self, "accelerator")
            else self.model
        )
        model.save_all_adapters(output_dir, with_head=False)
        if self._trains_fusion:
            model.save_all_adapter_fusions(output_dir)
        if hasattr(model, "save_all_heads"):
            model.save_all_heads(output_dir)
        elif model._has_prefix():
            # static HF head: saved with the first active adapter
            first = model.active_adapters.first()
            model._save_head_with_adapter(Path(output_dir) / first, first, True)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _reload(self, checkpoint: str, model: Any = None) -> None:
        model = model if model is not None else self.model
        folder = Path(checkpoint)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / loading.ADAPTER_CONFIG_NAME).is_file():
                model.load_adapter(sub, load_as=sub.name, with_head=not hasattr(model, "heads"))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / loading.FUSION_CONFIG_NAME).is_file():
                model.load_adapter_fusion(sub, with_head=False)
            elif (sub / loading.HEAD_CONFIG_NAME).is_file() and hasattr(model, "load_head"):
                model.load_head(sub, load_as=sub.name, set_active=False)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self._reload(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if self.state.best_model_checkpoint:
            self._reload(self.state.best_model_checkpoint)


def _label_names(model: Any) -> list[str]:
    """The label arguments of the active head (QA heads take start/end positions)."""
    heads = getattr(model, "heads", None)
    active = getattr(model, "active_head", None)
    if heads is not None and isinstance(active, str) and active in heads:
        if heads[active].config.get("head_type") == "question_answering":
            return ["start_positions", "end_positions"]
    return ["labels"]


def train_adapter_quick(
    model: Any,
    adapter_name: str,
    texts: Sequence[str],
    labels: Sequence[int],
    tokenizer: Any,
    config: Any = "seq_bn",
    num_labels: int | None = None,
    epochs: int = 10,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    max_length: int = 64,
    seed: int = 0,
    show_progress: bool = True,
) -> list[float]:
    """Add (if needed) and train a sequence-classification adapter with a plain AdamW loop.

    Works on a flexible-head model (adds a classification head named ``adapter_name``).
    Returns the mean loss of each epoch; only the adapter and its head change.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, ModelAdaptersMixin):
        raise AdapterError("train_adapter_quick needs a model with adapter support.")
    torch.manual_seed(seed)
    if adapter_name not in model.adapters_config.adapters:
        model.add_adapter(adapter_name, config=config)
    if hasattr(model, "heads") and adapter_name not in model.heads:
        model.add_classification_head(adapter_name, num_labels=num_labels or len(set(labels)))
    model.train_adapter(adapter_name)
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    targets = torch.tensor(list(labels))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    n = len(targets)
    for _ in tqdm(range(epochs), desc=f"training {adapter_name}", disable=not show_progress):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in encoded.items()}
            out = model(**batch, labels=targets[idx])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
        history.append(sum(losses) / len(losses))
    model.eval()
    return history
