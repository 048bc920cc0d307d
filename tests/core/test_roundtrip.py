"""Saving: same file names, config keys and weight names as the reference; round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapters_core
from adapters_core import BertAdapterModel, Fuse, RobertaAdapterModel, Stack
from adapters_core.loading import read_state_dict

from .conftest import INTEROP, tiny_bert_config, tiny_inputs, tiny_roberta_config


def _perturb(model: torch.nn.Module, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name or name.startswith("heads.") or "invertible" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**tiny_inputs()).logits


def _fresh_bert() -> BertAdapterModel:
    torch.manual_seed(0)
    return BertAdapterModel(tiny_bert_config()).eval()


@pytest.mark.parametrize("config", ["seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv"])
def test_files_match_reference_layout(tmp_path: Path, interop_dir: Path, config: str) -> None:
    model = _fresh_bert()
    model.config.name_or_path = "tiny-bert"
    model.add_adapter("a", config=config)
    model.add_classification_head("a", num_labels=3)
    model.save_adapter(tmp_path / "bin", "a", use_safetensors=False)
    model.save_adapter(tmp_path / "safe", "a")
    reference = interop_dir / "tiny-bert" / config / "a"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == sorted(
        p.name for p in reference.iterdir()
    )
    assert sorted(p.name for p in (tmp_path / "safe").iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "head_config.json",
        "model_head.safetensors",
    ]
    for file_name in ("adapter_config.json", "head_config.json"):
        ours = json.loads((tmp_path / "bin" / file_name).read_text())
        theirs = json.loads((reference / file_name).read_text())
        assert ours == theirs
        # json written with indent 2 and sorted keys, like the reference
        text = (tmp_path / "bin" / file_name).read_text()
        assert text == json.dumps(ours, indent=2, sort_keys=True)
    for weights in ("pytorch_adapter.bin", "pytorch_model_head.bin"):
        ours_sd = read_state_dict(tmp_path / "bin" / weights)
        theirs_sd = read_state_dict(reference / weights)
        assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {
            k: tuple(v.shape) for k, v in theirs_sd.items()
        }
    assert set(load_file(tmp_path / "safe" / "adapter.safetensors")) == set(
        read_state_dict(reference / "pytorch_adapter.bin")
    )


def test_fusion_files_match_reference(tmp_path: Path, interop_dir: Path) -> None:
    model = _fresh_bert()
    model.config.name_or_path = "tiny-bert"
    for name in "abc":
        model.add_adapter(name)
    model.add_adapter_fusion(Fuse("a", "b", "c"))
    model.save_adapter_fusion(tmp_path, "a,b,c", use_safetensors=False)
    reference = interop_dir / "tiny-bert" / "fuse" / "fusion"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in reference.iterdir())
    ours = json.loads((tmp_path / "adapter_fusion_config.json").read_text())
    assert ours == json.loads((reference / "adapter_fusion_config.json").read_text())
    assert set(read_state_dict(tmp_path / "pytorch_model_adapter_fusion.bin")) == set(
        read_state_dict(reference / "pytorch_model_adapter_fusion.bin")
    )


@pytest.mark.parametrize("use_safetensors", [True, False])
@pytest.mark.parametrize(
    "config",
    ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "seq_bn_inv", "double_seq_bn_inv"]
    + ["seq_bn[ln_before=True, ln_after=True, use_gating=True, scaling='channel']"]
    + ["seq_bn[reduction_factor={'0': 4, 'default': 16}, leave_out=[1]]"],
)
def test_save_load_round_trip_identical_outputs(
    tmp_path: Path, config: str, use_safetensors: bool
) -> None:
    model = _fresh_bert()
    model.add_adapter("a", config=config)
    model.add_classification_head("a", num_labels=3)
    _perturb(model)
    model.set_active_adapters("a")
    expected = _logits(model)
    model.save_adapter(tmp_path, "a", use_safetensors=use_safetensors)

    other = _fresh_bert()
    name = other.load_adapter(tmp_path, set_active=True)
    assert name == "a"
    assert other.adapters_config.adapters["a"] == model.adapters_config.adapters["a"]
    assert torch.equal(_logits(other), expected)


def test_load_as_renames(tmp_path: Path) -> None:
    model = _fresh_bert()
    model.add_adapter("a")
    model.add_classification_head("a", num_labels=2)
    _perturb(model)
    model.set_active_adapters("a")
    expected = _logits(model)
    model.save_adapter(tmp_path, "a")
    other = _fresh_bert()
    assert other.load_adapter(tmp_path, load_as="renamed", set_active=True) == "renamed"
    assert "renamed" in other.heads and other.active_head == "renamed"
    assert torch.equal(_logits(other), expected)


def test_bare_base_model_and_adapter_model_interchange(tmp_path: Path) -> None:
    """A BertModel writes keys without ``bert.``; a BertAdapterModel with it. Both load both."""
    from transformers import BertModel

    torch.manual_seed(0)
    bare = adapters_core.init(BertModel(tiny_bert_config())).eval()
    bare.add_adapter("a", config="double_seq_bn")
    _perturb(bare)
    bare.set_active_adapters("a")
    bare.save_adapter(tmp_path / "bare", "a")
    keys = set(load_file(tmp_path / "bare" / "adapter.safetensors"))
    assert all(k.startswith("encoder.layer.") for k in keys)

    flex = _fresh_bert()
    flex.load_adapter(tmp_path / "bare", set_active=True)
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = bare(**inputs).last_hidden_state
        got = flex.bert(**inputs).last_hidden_state
    assert torch.allclose(expected, got, atol=1e-6)

    flex.save_adapter(tmp_path / "flex", "a")
    assert all(k.startswith("bert.") for k in load_file(tmp_path / "flex" / "adapter.safetensors"))
    torch.manual_seed(0)
    bare2 = adapters_core.init(BertModel(tiny_bert_config())).eval()
    bare2.load_adapter(tmp_path / "flex", set_active=True)
    with torch.no_grad():
        assert torch.allclose(bare2(**inputs).last_hidden_state, expected, atol=1e-6)


def test_reference_adapter_loads_into_bare_model(interop_dir: Path) -> None:
    from transformers import BertModel

    model = adapters_core.init(BertModel.from_pretrained(str(interop_dir / "models/tiny-bert")))
    model.load_adapter(interop_dir / "tiny-bert/seq_bn/a", set_active=True)
    assert "a" in model.adapters_config.adapters


def test_static_head_model_saves_classifier(tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = adapters_core.init(BertForSequenceClassification(tiny_bert_config(num_labels=3)))
    model.eval()
    model.add_adapter("a")
    _perturb(model)
    model.set_active_adapters("a")
    model.save_adapter(tmp_path, "a")
    head = json.loads((tmp_path / "head_config.json").read_text())
    assert head["config"] is None and head["num_labels"] == 3
    assert head["model_class"] == "BertForSequenceClassification"
    assert set(load_file(tmp_path / "model_head.safetensors")) == {
        "classifier.weight",
        "classifier.bias",
    }
    expected = _logits(model)
    torch.manual_seed(1)
    other = adapters_core.init(BertForSequenceClassification(tiny_bert_config(num_labels=3)))
    other.eval()
    other.bert.load_state_dict(model.bert.state_dict(), strict=False)
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(_logits(other), expected)

    # a flexible-head model converts the static head
    flex = _fresh_bert()
    flex.load_adapter(tmp_path, set_active=True)
    flex.bert.load_state_dict(model.bert.state_dict())
    assert flex.heads["a"].config["head_type"] == "classification"
    assert torch.allclose(_logits(flex), expected, atol=1e-6)


def test_fusion_round_trip(tmp_path: Path) -> None:
    model = _fresh_bert()
    for name in "ab":
        model.add_adapter(name)
    model.add_adapter_fusion(Fuse("a", "b"))
    model.add_classification_head("h", num_labels=2)
    _perturb(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "fusion" in name:
                p.add_(0.1)
    model.set_active_adapters(Fuse("a", "b"))
    model.active_head = "h"
    expected = _logits(model)
    model.save_adapter_setup(tmp_path, Fuse("a", "b"), head_setup="h")
    assert json.loads((tmp_path / "adapter_setup.json").read_text())["adapter_setup"] == {
        "type": "Fuse",
        "children": [
            {"type": "single", "children": ["a"]},
            {"type": "single", "children": ["b"]},
        ],
        "kwargs": {},
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a",
        "a,b",
        "adapter_setup.json",
        "b",
        "h",
    ]
    other = _fresh_bert()
    setup, head_setup = other.load_adapter_setup(tmp_path, set_active=True)
    assert setup == Fuse("a", "b") and head_setup == "h"
    assert torch.equal(_logits(other), expected)


def test_save_all_adapters(tmp_path: Path) -> None:
    model = _fresh_bert()
    model.add_adapter("a")
    model.add_adapter("b", config="par_bn")
    model.add_classification_head("a")
    model.save_all_adapters(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert (tmp_path / "a" / "head_config.json").is_file()
    assert not (tmp_path / "b" / "head_config.json").exists()


def test_roberta_round_trip_and_stack(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RobertaAdapterModel(tiny_roberta_config()).eval()
    model.add_adapter("lang", config="seq_bn_inv")
    model.add_adapter("task")
    model.add_classification_head("task", num_labels=2)
    _perturb(model)
    model.set_active_adapters(Stack("lang", "task"))
    expected = _logits(model)
    model.save_adapter(tmp_path / "lang", "lang")
    model.save_adapter(tmp_path / "task", "task")
    torch.manual_seed(0)
    other = RobertaAdapterModel(tiny_roberta_config()).eval()
    other.load_adapter(tmp_path / "lang")
    other.load_adapter(tmp_path / "task")
    other.set_active_adapters(["lang", "task"])
    assert torch.equal(_logits(other), expected)


def test_legacy_files_without_version_are_upgraded(tmp_path: Path, interop_dir: Path) -> None:
    """adapter-transformers v1/v2 files: no version key, old weight and field names."""
    source = interop_dir / "tiny-bert" / "seq_bn_inv" / "a"
    saved = json.loads((source / "adapter_config.json").read_text())
    legacy = {k: v for k, v in saved.items() if k != "version"}
    config = dict(legacy["config"])
    config["invertible_adapter"] = {"block_type": "nice", "reduction_factor": 2}
    del config["inv_adapter"], config["inv_adapter_reduction_factor"]
    legacy["config"] = config
    (tmp_path / "adapter_config.json").write_text(json.dumps(legacy))
    state = read_state_dict(source / "pytorch_adapter.bin")
    renamed = {
        k.replace(".output.adapters.", ".output.layer_text_lang_adapters.").replace(
            "invertible_adapters", "invertible_lang_adapters"
        ): v
        for k, v in state.items()
    }
    torch.save(renamed, tmp_path / "pytorch_adapter.bin")

    reference = BertAdapterModel.from_pretrained(str(interop_dir / "models/tiny-bert")).eval()
    reference.load_adapter(source, with_head=False, set_active=True)
    model = BertAdapterModel.from_pretrained(str(interop_dir / "models/tiny-bert")).eval()
    model.load_adapter(tmp_path, set_active=True)
    assert model.adapters_config.adapters["a"].inv_adapter == "nice"
    inputs = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs).last_hidden_state, reference(**inputs).last_hidden_state)


def test_interop_fixture_saves_back_identically(tmp_path: Path, interop_dir: Path) -> None:
    """Load a reference adapter, save it as .bin, and compare tensors bit for bit."""
    source = INTEROP / "tiny-bert" / "double_seq_bn" / "a"
    model = BertAdapterModel.from_pretrained(str(interop_dir / "models/tiny-bert"))
    model.config.name_or_path = "tiny-bert"
    model.load_adapter(source)
    model.save_adapter(tmp_path, "a", use_safetensors=False)
    for file_name in ("pytorch_adapter.bin", "pytorch_model_head.bin"):
        ours, theirs = read_state_dict(tmp_path / file_name), read_state_dict(source / file_name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
