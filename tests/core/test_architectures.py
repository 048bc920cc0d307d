"""The architecture tables: every Hub model type has one, each is validated when defined."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from adapters_core.models import SPECS, ArchitectureSpecError
from adapters_core.models.bert import SPEC as BERT_SPEC
from adapters_core.models.spec import AdapterLocation, LayerStack, LinearSpec

from .conftest import SHARED, TINY_MODEL_TYPES

HUB_SNAPSHOT = SHARED / "hub-snapshot"


def _card_model_types() -> set[str]:
    types = set()
    for path in (HUB_SNAPSHOT / "adapters").rglob("*.yaml"):
        card = yaml.safe_load(path.read_text())
        if isinstance(card, dict) and card.get("model_type"):
            types.add(str(card["model_type"]))
    return types


def test_every_model_type_of_the_hub_snapshot_has_a_table() -> None:
    if not (HUB_SNAPSHOT / "adapters").is_dir():
        pytest.skip(f"hub snapshot not found at {HUB_SNAPSHOT}")
    types = _card_model_types()
    assert {"bert", "distilbert", "bart", "gpt2", "mbart"} <= types  # the snapshot is read
    assert sorted(types - set(SPECS)) == []


def test_a_wrong_field_is_named_when_the_table_is_defined() -> None:
    bad_location = AdapterLocation("mh_adapter", "attention_adapters", "hok")
    with pytest.raises(ArchitectureSpecError, match=r"locations\[0\]\.attach: 'hok'"):
        dataclasses.replace(
            BERT_SPEC, stacks=(LayerStack("layers", "encoder.layer", (bad_location,)),)
        )
    with pytest.raises(ArchitectureSpecError, match=r"linears\[0\]\.matrix"):
        dataclasses.replace(
            BERT_SPEC,
            stacks=(LayerStack("layers", "x", (), (LinearSpec("a.q", "selfattn", "z"),)),),
        )
    with pytest.raises(ArchitectureSpecError, match=r"\.pooling: 'middle'"):
        dataclasses.replace(BERT_SPEC, pooling="middle")


def test_llama_keeps_the_reference_naming_of_its_mlp_projections() -> None:
    """File compatibility: the reference wraps down_proj as "intermediate", up_proj as "output"."""
    stack = SPECS["llama"].stacks[0]
    assert stack.linear("intermediate").path == "mlp.down_proj"  # type: ignore[union-attr]
    assert stack.linear("output").path == "mlp.up_proj"  # type: ignore[union-attr]
    qkv = SPECS["gpt2"].stacks[0].linear("selfattn", "k")
    assert qkv is not None and qkv.fused == ("q", "k", "v") and qkv.conv1d


def test_encoder_decoders_number_decoder_layers_after_the_encoder() -> None:
    from transformers import BartConfig

    from adapters_core import AutoAdapterModel

    model = AutoAdapterModel.from_config(
        BartConfig(
            vocab_size=64,
            d_model=16,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=8,
            decoder_ffn_dim=8,
        )
    )
    model.add_adapter(
        "a",
        {
            "architecture": "bottleneck",
            "mh_adapter": False,
            "output_adapter": True,
            "reduction_factor": 2,
            "non_linearity": "relu",
            "leave_out": [2],
        },
    )
    layers = sorted(model.get_adapter("a"))
    assert layers == [0, 1, 3]
    assert "a" not in model.model.decoder.layers[0].output_adapters.adapters
    assert "a" in model.model.encoder.layers[0].output_adapters.adapters


def test_the_support_table_in_the_docs_matches_the_code() -> None:
    from adapters_core import support

    doc = (Path(__file__).resolve().parents[2] / "docs" / "adapters_core.md").read_text()
    assert support.render(doc) == doc, "run: python -m adapters_core.support docs/adapters_core.md"
    assert "| gpt2 | yes" in doc


def test_a_method_refusing_an_architecture_shows_its_reason() -> None:
    from adapters_core import support
    from adapters_core.methods import METHODS

    class Refusing(type(METHODS[0])):  # type: ignore[misc]
        config_names = ("made_up",)

        def supports(self, spec: object, config_name: str) -> str | None:
            return "not on decoders" if getattr(spec, "kind", "") == "decoder" else None

    METHODS.append(Refusing())
    try:
        table = support.support_table()
    finally:
        METHODS.pop()
    assert "| llama |" in table and "no (1)" in table and "1. not on decoders" in table


TINY = TINY_MODEL_TYPES


@pytest.mark.parametrize("arch", list(TINY))
def test_table_paths_exist_on_the_model(interop_dir: Path, arch: str) -> None:
    """Every path a table names resolves on every layer of a real model of its type, and each
    linear layer has the type and shape the table says (LoRA-style methods rely on it)."""
    from transformers import AutoModel
    from transformers.pytorch_utils import Conv1D

    from adapters_core.methods.base import ModelHandle, iter_layers, iter_linears, resolve

    spec = SPECS[TINY[arch]]
    model = AutoModel.from_pretrained(str(interop_dir / "models" / arch))
    handle = ModelHandle(model, spec, None)  # type: ignore[arg-type]
    layers = list(iter_layers(handle))
    assert [s.idx for s in layers] == list(range(len(layers)))
    for _, stack, layer in layers:
        for loc in stack.locations:
            for path in (loc.output, loc.residual, loc.layer_norm):
                if loc.attach == "hook" and path:
                    resolve(layer, path)
    found = list(iter_linears(handle))
    assert len(found) == sum(len(s.linears) for _, s, _ in layers)
    hidden = handle.hidden_size
    for site in found:
        module = site.module
        if site.spec.conv1d:
            assert isinstance(module, Conv1D), site.spec.path
            out_features = module.weight.shape[1]
        else:
            assert isinstance(module, torch.nn.Linear), site.spec.path
            out_features = module.out_features
        if site.spec.fused:
            assert out_features == hidden * len(site.spec.fused), site.spec.path


@pytest.mark.parametrize("arch", [a for a in TINY if a not in ("tiny-bert", "tiny-roberta")])
def test_reference_lora_keys_sit_on_the_tables_linears(interop_dir: Path, arch: str) -> None:
    """The reference's LoRA files (q and v by default) name exactly the modules the table lists
    for those matrices: weight names will match when LoRA wraps the table's linears."""
    from transformers import AutoModel

    from adapters_core.loading import find_weights_file, read_state_dict
    from adapters_core.methods.base import ModelHandle, iter_linears

    spec = SPECS[TINY[arch]]
    model = AutoModel.from_pretrained(str(interop_dir / "models" / arch))
    names = {id(m): n for n, m in model.named_modules()}
    expected = set()
    for site in iter_linears(ModelHandle(model, spec, None)):  # type: ignore[arg-type]
        if site.spec.location in ("selfattn", "crossattn") and {"q", "v"} & set(site.spec.matrices):
            expected.add(names[id(site.module)])
    folder = interop_dir / arch / "lora" / "a"
    keys = read_state_dict(find_weights_file(folder, "adapter"))
    prefix = spec.base_model_prefix + "."
    wrapped = {k.split(".loras.")[0].removeprefix(prefix) for k in keys}
    assert wrapped == expected
