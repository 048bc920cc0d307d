"""Model classes: AutoAdapterModel, init() on plain HF classes, heads, full checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertModel,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaModel,
)

import adapters_core
from adapters_core import AutoAdapterModel, BertAdapterModel, Fuse, Parallel, Stack

from .conftest import tiny_bert_config, tiny_inputs, tiny_roberta_config


def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name or name.startswith("heads.") or "classifier" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _xlmr_config() -> XLMRobertaConfig:
    kwargs = tiny_roberta_config().to_dict()
    kwargs.pop("model_type", None)
    return XLMRobertaConfig(**kwargs)


def test_auto_adapter_model_picks_class() -> None:
    assert type(AutoAdapterModel.from_config(tiny_bert_config())).__name__ == "BertAdapterModel"
    assert type(AutoAdapterModel.from_config(tiny_roberta_config())).__name__ == (
        "RobertaAdapterModel"
    )
    model = AutoAdapterModel.from_config(_xlmr_config())
    assert type(model).__name__ == "XLMRobertaAdapterModel"
    model.add_adapter("a", config="double_seq_bn")
    model.add_tagging_head("a", num_labels=4)
    model.set_active_adapters("a")
    model.eval()
    with torch.no_grad():
        assert model(**tiny_inputs()).logits.shape == (3, 12, 4)


def test_init_keeps_class_name_and_outputs() -> None:
    torch.manual_seed(0)
    plain = BertModel(tiny_bert_config()).eval()
    with torch.no_grad():
        expected = plain(**tiny_inputs()).last_hidden_state
    model = adapters_core.init(plain)
    assert type(model).__name__ == "BertModel" and isinstance(model, BertModel)
    model.add_adapter("a", config="seq_bn_inv")  # zero-ish init, but not active yet
    with torch.no_grad():
        assert torch.equal(model(**tiny_inputs()).last_hidden_state, expected)
    assert adapters_core.init(model) is model


def test_init_xlm_roberta_and_parallel_on_bare_model() -> None:
    model = adapters_core.init(XLMRobertaModel(_xlmr_config())).eval()
    model.add_adapter("a")
    model.add_adapter("b")
    _perturb(model)
    model.set_active_adapters(Parallel("a", "b"))
    with torch.no_grad():
        out = model(**tiny_inputs()).last_hidden_state
    assert out.shape[0] == 6  # the batch is replicated once per channel
    model.set_active_adapters("b")
    with torch.no_grad():
        assert torch.allclose(model(**tiny_inputs()).last_hidden_state, out[3:], atol=1e-6)


def test_roberta_static_head_converts_to_flex(tmp_path: Path) -> None:
    torch.manual_seed(0)
    static = adapters_core.init(RobertaForSequenceClassification(tiny_roberta_config(num_labels=2)))
    static.eval()
    static.add_adapter("a")
    _perturb(static)
    static.set_active_adapters("a")
    static.save_adapter(tmp_path, "a")
    with torch.no_grad():
        expected = static(**tiny_inputs()).logits
    flex = AutoAdapterModel.from_config(tiny_roberta_config()).eval()
    flex.roberta.load_state_dict(static.roberta.state_dict(), strict=False)
    flex.load_adapter(tmp_path, set_active=True)
    with torch.no_grad():
        assert torch.allclose(flex(**tiny_inputs()).logits, expected, atol=1e-6)


def test_static_head_of_other_class_is_skipped(tmp_path: Path) -> None:
    static = adapters_core.init(BertForSequenceClassification(tiny_bert_config()))
    static.add_adapter("a")
    static.save_adapter(tmp_path, "a")
    other = adapters_core.init(BertModel(tiny_bert_config()))
    other.load_adapter(tmp_path)  # head of another class: ignored with a warning
    assert "a" in other.adapters_config.adapters


@pytest.mark.parametrize(
    "add,shape",
    [
        (lambda m: m.add_masked_lm_head("h"), (3, 12, 1000)),
        (lambda m: m.add_causal_lm_head("h"), (3, 12, 1000)),
        (lambda m: m.add_qa_head("h"), None),
        (lambda m: m.add_multiple_choice_head("h", num_choices=3), (1, 3)),
        (lambda m: m.add_classification_head("h", num_labels=4, multilabel=True), (3, 4)),
        (lambda m: m.add_classification_head("h", num_labels=1), (3, 1)),
    ],
)
def test_heads_run_and_give_losses(add, shape, tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("h", config="seq_bn_inv")
    add(model)
    model.set_active_adapters("h")
    inputs = tiny_inputs()
    head_type = model.heads["h"].config["head_type"]
    labels = {
        "masked_lm": {"labels": inputs["input_ids"]},
        "causal_lm": {"labels": inputs["input_ids"]},
        "question_answering": {
            "start_positions": torch.tensor([1, 2, 3]),
            "end_positions": torch.tensor([2, 3, 4]),
        },
        "multiple_choice": {"labels": torch.tensor([1])},
        "multilabel_classification": {"labels": torch.ones(3, 4)},
        "classification": {"labels": torch.tensor([0.5, 1.0, 0.0])},
    }[head_type]
    out = model(**inputs, **labels)
    assert out.loss is not None and torch.isfinite(out.loss)
    if shape is not None:
        assert tuple(out.logits.shape) == shape
    else:
        assert out.start_logits.shape == (3, 12)


def test_lm_head_is_tied_and_uses_inverse_invertible_adapter(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("lang", config="seq_bn_inv")
    model.add_masked_lm_head("lang")
    assert model.heads["lang"][3].weight is model.bert.embeddings.word_embeddings.weight
    _perturb(model)
    model.set_active_adapters("lang")
    with torch.no_grad():
        with_inv = model(**tiny_inputs()).logits
        inv = model.bert.invertible_adapters["lang"]
        x = torch.randn(2, 5, 64)
        assert torch.allclose(inv(inv(x), rev=True), x, atol=1e-5)
    assert with_inv.shape == (3, 12, 1000)


def test_full_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config()).eval()
    model.add_adapter("a")
    model.add_adapter("b", config="double_seq_bn")
    model.add_adapter_fusion(Fuse("a", "b"), config="static")
    model.add_classification_head("a", num_labels=3)
    model.add_masked_lm_head("mlm")
    _perturb(model)
    model.set_active_adapters(Fuse("a", "b"))
    model.active_head = "a"
    with torch.no_grad():
        expected = model(**tiny_inputs()).logits
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["adapters"]["adapters"]) == {"a", "b"}
    assert set(config["prediction_heads"]) == {"a", "mlm"}
    other = AutoAdapterModel.from_pretrained(str(tmp_path)).eval()
    assert set(other.adapters_config.adapters) == {"a", "b"}
    assert other.adapters_config.fusions["a,b"][1].value is False
    other.set_active_adapters(Fuse("a", "b"))
    other.active_head = "a"
    with torch.no_grad():
        assert torch.equal(other(**tiny_inputs()).logits, expected)


def test_delete_adapter_and_head(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("a", config="seq_bn_inv")
    model.add_adapter("b")
    model.add_adapter_fusion(["a", "b"])
    model.add_classification_head("a")
    model.set_active_adapters(Stack("a", "b"))
    model.delete_adapter("a")
    assert "a" not in model.adapters_config.adapters and not model.adapters_config.fusions
    assert model.active_adapters is None
    assert not any(".a." in k for k in model.state_dict() if "adapters" in k)
    model.delete_head("a")
    assert "a" not in model.heads and model.active_head is None


def test_eval_and_train_mode_follow_model(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("a")
    model.train()
    assert model.bert.encoder.layer[0].output.adapters["a"].training
    model.eval()
    assert not model.bert.encoder.layer[0].output.adapters["a"].training


def test_adapters_follow_base_dtype() -> None:
    model = BertAdapterModel(tiny_bert_config()).to(torch.bfloat16).eval()
    model.add_adapter("a", config="seq_bn_inv")
    model.add_classification_head("a")
    model.set_active_adapters("a")
    assert (
        model.bert.encoder.layer[0].output.adapters["a"].adapter_up.weight.dtype == torch.bfloat16
    )
    with torch.no_grad():
        assert model(**tiny_inputs()).logits.dtype == torch.bfloat16
    model.adapter_to("a", dtype=torch.float32)
    assert model.bert.invertible_adapters["a"].F[0].weight.dtype == torch.float32
