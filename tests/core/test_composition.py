"""Composition blocks: parsing, validation errors, execution, context manager."""

from __future__ import annotations

import pytest
import torch

from adapters_core import (
    AdapterNotFoundError,
    AdapterSetup,
    Average,
    BatchSplit,
    CompositionError,
    Fuse,
    MultiHeadOutput,
    Parallel,
    Split,
    Stack,
    parse_composition,
)
from adapters_core.composition import AdapterCompositionBlock, parse_heads_from_composition

from .conftest import tiny_inputs


def test_parse_strings_and_lists() -> None:
    assert parse_composition("a") == Stack("a")
    assert parse_composition(["a", "b"]) == Stack("a", "b")
    assert parse_composition(["a", ["b", "c"]]) == Stack("a", Fuse("b", "c"))
    assert parse_composition(None) is None
    assert Fuse("a", "b").name == "a,b"
    assert Fuse("a", "b", name="ab").name == "ab"
    assert Average("a", "b", weights=[1, 3]).weights == [0.25, 0.75]


@pytest.mark.parametrize(
    "setup",
    [
        Fuse("a", Parallel("b", "c")),
        Fuse("a", Fuse("b", "c")),
        Parallel("a", Parallel("b", "c")),
        Parallel("a", Fuse("b", "c")),
        Average("a", Fuse("b", "c")),
        Average("a", Parallel("b", "c")),
        Split("a", Parallel("b", "c"), splits=[6, 6]),
        Stack("a", Fuse("b", Stack("c", Fuse("d", "e")))),
    ],
)
def test_invalid_nestings_rejected(setup: AdapterCompositionBlock) -> None:
    with pytest.raises(CompositionError):
        parse_composition(setup)


def test_too_deep() -> None:
    with pytest.raises(CompositionError, match="too deep"):
        parse_composition(Stack("a", BatchSplit("b", Average("c", "d"), batch_sizes=[1, 2])))


def test_serialization_round_trip() -> None:
    setup = Stack("a", Fuse("b", "c"), BatchSplit("d", "e", batch_sizes=[1, 2]))
    assert AdapterCompositionBlock.from_dict(setup.to_dict()) == setup
    assert AdapterCompositionBlock.from_dict(Average("a", "b", weights=[0.2, 0.8]).to_dict()) == (
        Average("a", "b", weights=[0.2, 0.8])
    )


def test_heads_from_composition() -> None:
    assert parse_heads_from_composition(Stack("a", "b")) == "b"
    assert parse_heads_from_composition(Parallel("a", Stack("b", "c"))) == ["a", "c"]
    bs = parse_heads_from_composition(BatchSplit("a", "b", batch_sizes=2))
    assert isinstance(bs, BatchSplit) and bs.batch_sizes == [2, 2]


def _model(model, *names, config="seq_bn"):
    g = torch.Generator().manual_seed(5)
    for n in names:
        model.add_adapter(n, config=config)
        model.add_classification_head(n, num_labels=2)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "adapters" in k or k.startswith("heads."):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _logits(model, **kw):
    with torch.no_grad():
        return model(**tiny_inputs(), **kw).logits


def test_unknown_adapter_and_missing_fusion(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    with pytest.raises(AdapterNotFoundError):
        model.set_active_adapters("nope")
    with pytest.raises(CompositionError, match="add_adapter_fusion"):
        model.set_active_adapters(Fuse("a", "b"))


def test_batch_split_equals_separate_runs(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    inputs = tiny_inputs()
    model.set_active_adapters("a")
    with torch.no_grad():
        ha = model.bert(**inputs).last_hidden_state
    model.set_active_adapters("b")
    with torch.no_grad():
        hb = model.bert(**inputs).last_hidden_state
    model.set_active_adapters(BatchSplit("a", "b", batch_sizes=[1, 2]))
    with torch.no_grad():
        out = model(**inputs)
    assert isinstance(out, MultiHeadOutput) and len(out) == 2
    with torch.no_grad():
        hidden = model.bert(**inputs).last_hidden_state
    assert torch.allclose(hidden[:1], ha[:1], atol=1e-6)
    assert torch.allclose(hidden[1:], hb[1:], atol=1e-6)
    with pytest.raises(CompositionError, match="batch"):
        model.set_active_adapters(BatchSplit("a", "b", batch_sizes=[2, 2]))
        model(**inputs)


def test_parallel_equals_separate_runs(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    model.set_active_adapters("a")
    la = _logits(model)
    model.set_active_adapters("b")
    lb = _logits(model)
    model.set_active_adapters(Parallel("a", "b"))
    out = model(**tiny_inputs())
    assert torch.allclose(out[0].logits, la, atol=1e-6)
    assert torch.allclose(out[1].logits, lb, atol=1e-6)
    assert out.logits.shape[0] == 6


def test_split_runs(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    model.set_active_adapters(Split("a", "b", splits=[5, 7]))
    model.active_head = "b"
    assert _logits(model).shape == (3, 2)
    model.set_active_adapters(Split("a", "b", splits=[5, 5]))
    with pytest.raises(CompositionError, match="sequence length"):
        _logits(model)


def test_average_runs(tiny_bert_adapter_model) -> None:
    """The reference averages weighted outputs with a mean (dividing by N once more)."""
    model = _model(tiny_bert_adapter_model, "a", "b")
    model.set_active_adapters(Average("a", "b", weights=[0.5, 0.5]))
    model.active_head = "a"
    assert _logits(model).shape == (3, 2)


def test_adapter_setup_context_overrides_active(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    model.set_active_adapters("a")
    la = _logits(model)
    model.set_active_adapters("b")
    lb = _logits(model)
    with AdapterSetup("a"):
        assert torch.allclose(_logits(model), la)
    assert torch.allclose(_logits(model), lb)
    with AdapterSetup(Stack("a"), head_setup="b"):
        with torch.no_grad():
            out = model(**tiny_inputs())
    assert out.logits.shape == (3, 2)


def test_setup_syntax_everywhere(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b", "c")
    model.add_adapter_fusion(["b", "c"])
    model.set_active_adapters(["a", ["b", "c"]])
    assert model.active_adapters == Stack("a", Fuse("b", "c"))
    model.active_adapters = "a"
    assert model.active_adapters == Stack("a")
    model.train_adapter(["a", "b"])
    assert model.active_adapters == Stack("a", "b")
    assert model.active_head == "b"


def test_skip_layers_and_deactivation(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a")
    model.set_active_adapters(None)
    model.active_head = "a"
    base = _logits(model)
    model.set_active_adapters("a", skip_layers=[0, 1])
    assert torch.allclose(_logits(model), base)
    model.set_active_adapters("a")
    assert not torch.allclose(_logits(model), base)


def test_fusion_attentions_output(tiny_bert_adapter_model) -> None:
    model = _model(tiny_bert_adapter_model, "a", "b")
    model.add_adapter_fusion(Fuse("a", "b"), config="static", set_active=True)
    model.active_head = "a"
    with torch.no_grad():
        out = model(**tiny_inputs(), output_adapter_fusion_attentions=True)
    scores = out["adapter_fusion_attentions"]["a,b"]
    assert set(scores) == {0, 1} and "output_adapter" in scores[0]
