"""Bad input gives clear exceptions (safety of weight files is tested in test_loading_*.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from adapters_core import (
    AdapterConfig,
    AdapterConfigError,
    AdapterError,
    AdapterLoadError,
    AdapterNotFoundError,
    BertAdapterModel,
)
from adapters_core.loading import read_state_dict, write_state_dict

from .conftest import tiny_bert_config


def _saved(tmp_path: Path, model: BertAdapterModel, config: str = "seq_bn") -> Path:
    model.add_adapter("a", config=config)
    model.add_classification_head("a", num_labels=2)
    folder = tmp_path / "a"
    model.save_adapter(folder, "a")
    return folder


def test_folder_without_config(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(AdapterNotFoundError, match="adapter_config.json"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_missing_folder(tmp_path: Path, tiny_bert_adapter_model) -> None:
    with pytest.raises(AdapterError):
        tiny_bert_adapter_model.load_adapter(tmp_path / "does-not-exist")


def test_folder_without_weights(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    (folder / "adapter.safetensors").unlink()
    with pytest.raises(AdapterNotFoundError, match="weights"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_unknown_method(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"]["architecture"] = "quantum_adapter"
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.raises(AdapterConfigError, match="quantum_adapter"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_unknown_method_lists_the_known_ones(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"] = {"architecture": "no_such_method"}
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    model = BertAdapterModel(tiny_bert_config())
    with pytest.raises(AdapterConfigError, match="'no_such_method'.*known: .*mtl_lora"):
        model.load_adapter(folder)
    with pytest.raises(AdapterConfigError, match="'no_such_config'.*known: .*unipelt"):
        model.add_adapter("c", config="no_such_config")
    assert "c" not in model.adapters_config.adapters


@pytest.mark.parametrize(
    "config",
    ["no_such_method", "seq_bn[reduction_factor=-1]", "seq_bn[unknown_field=1]", "seq_bn[", ""],
)
def test_bad_config_strings(config: str) -> None:
    with pytest.raises(AdapterConfigError):
        AdapterConfig.load(config)


def test_unknown_field_in_saved_config(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"]["warp_factor"] = 9
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.raises(AdapterConfigError, match="warp_factor"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_shapes_that_do_not_fit(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    wider = BertAdapterModel(tiny_bert_config(hidden_size=128, intermediate_size=64))
    with pytest.raises(AdapterLoadError, match="shape mismatches") as info:
        wider.load_adapter(folder)
    assert "adapter_down.0.weight" in str(info.value)
    assert "a" not in wider.adapters_config.adapters  # no half-loaded adapter left behind


def test_missing_and_unexpected_keys_listed(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    path = folder / "adapter.safetensors"
    state = read_state_dict(path)
    dropped = "bert.encoder.layer.1.output.adapters.a.adapter_up.bias"
    state.pop(dropped)
    state["bert.encoder.layer.7.output.adapters.a.adapter_up.bias"] = torch.zeros(64)
    write_state_dict(state, path)
    with pytest.raises(AdapterLoadError) as info:
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)
    message = str(info.value)
    assert "missing keys" in message and dropped in message
    assert "unexpected keys" in message and "layer.7" in message


def test_config_that_disagrees_with_weights(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model, config="seq_bn")
    saved = json.loads((folder / "adapter_config.json").read_text())
    saved["config"]["mh_adapter"] = True  # the file claims attention adapters it lacks
    (folder / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.raises(AdapterLoadError, match="missing keys"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_bad_head_weights(tmp_path: Path, tiny_bert_adapter_model) -> None:
    folder = _saved(tmp_path, tiny_bert_adapter_model)
    saved = json.loads((folder / "head_config.json").read_text())
    saved["config"]["num_labels"] = 5
    (folder / "head_config.json").write_text(json.dumps(saved))
    with pytest.raises(AdapterLoadError, match="shape mismatches"):
        BertAdapterModel(tiny_bert_config()).load_adapter(folder)


def test_peft_folder_is_recognised(tmp_path: Path) -> None:
    """A PEFT folder goes to the PEFT reader (peft_format.py), which names what is missing."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(AdapterNotFoundError, match="PEFT adapter config but no adapter_model"):
        BertAdapterModel(tiny_bert_config()).load_adapter(tmp_path)


def test_duplicate_and_invalid_names(tiny_bert_adapter_model) -> None:
    model = tiny_bert_adapter_model
    model.add_adapter("a")
    with pytest.raises(AdapterError, match="already exists"):
        model.add_adapter("a")
    model.add_adapter("a", config="par_bn", overwrite_ok=True)
    assert model.adapters_config.adapters["a"].is_parallel
    with pytest.raises(AdapterConfigError):
        model.add_adapter("with.dot")
    with pytest.raises(AdapterNotFoundError):
        model.delete_adapter("nope")
    with pytest.raises(AdapterNotFoundError):
        model.save_adapter("/tmp/unused", "nope")


def test_fusion_needs_adapters(tiny_bert_adapter_model, tmp_path: Path, interop_dir: Path) -> None:
    with pytest.raises(AdapterNotFoundError):
        tiny_bert_adapter_model.add_adapter_fusion(["x", "y"])
    shutil.copytree(interop_dir / "tiny-bert" / "fuse" / "fusion", tmp_path / "fusion")
    with pytest.raises(AdapterNotFoundError):
        tiny_bert_adapter_model.load_adapter_fusion(tmp_path / "fusion")


def test_unsupported_model_type() -> None:
    from transformers import GPTJConfig, GPTJModel

    import adapters_core

    with pytest.raises(AdapterError, match="not supported"):
        adapters_core.init(GPTJModel(GPTJConfig(n_embd=32, n_layer=1, n_head=2, vocab_size=64)))
