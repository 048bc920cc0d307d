"""The v2 engine's promises: placement per site, a forward context on every forward, leave_out
by the reference's layer numbers, the kernel switch, pooling and heads on the new tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import adapters_core
from adapters_core import AdapterConfigError, AutoAdapterModel, ForwardContext, kernels

from .conftest import INTEROP, tiny_bert_config


def _tiny(arch: str) -> nn.Module:
    return AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch)).eval()


def test_adding_an_adapter_moves_no_other_adapter(interop_dir: Path) -> None:
    model = _tiny("tiny-llama")
    model.add_adapter("a", "seq_bn")
    model.adapter_to("a", dtype=torch.float64)
    model.add_adapter("b", "seq_bn")
    a = model.get_adapter("a")[0]["output_adapter"]
    b = model.get_adapter("b")[0]["output_adapter"]
    assert next(a.parameters()).dtype == torch.float64  # left where it was
    assert next(b.parameters()).dtype == torch.float32  # placed like its site


def test_new_modules_take_their_sites_dtype(interop_dir: Path) -> None:
    model = _tiny("tiny-gpt2")
    model.transformer.h[1].to(torch.float64)  # a model split over dtypes (as over devices)
    model.add_adapter("a", "seq_bn")
    assert next(model.get_adapter("a")[0]["output_adapter"].parameters()).dtype == torch.float32
    assert next(model.get_adapter("a")[1]["output_adapter"].parameters()).dtype == torch.float64


def test_a_forward_context_is_open_in_every_forward() -> None:
    from transformers import BertModel

    model = adapters_core.init(BertModel(tiny_bert_config()).eval())
    seen = []
    model.encoder.layer[0].register_forward_hook(
        lambda *a: seen.append(ForwardContext.get_context())
    )
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert seen and seen[0] is not None
    assert seen[0].values["input_ids"].tolist() == [[5, 6, 7]]
    assert ForwardContext.get_context() is None  # closed afterwards


def test_leave_out_counts_decoder_layers_after_the_encoder(
    interop_dir: Path, tmp_path: Path
) -> None:
    model = _tiny("tiny-t5")
    model.add_adapter("a", "double_seq_bn")
    model.save_adapter(tmp_path / "a", "a", with_head=False)
    fresh = _tiny("tiny-t5")
    fresh.load_adapter(tmp_path / "a", leave_out=[0, 2])
    assert sorted(fresh.get_adapter("a")) == [1, 3]
    encoder0 = fresh.transformer.encoder.block[0].layer[0]
    decoder1 = fresh.transformer.decoder.block[1].layer[0]
    assert "a" not in encoder0.adapters and "a" in decoder1.adapters


def test_hooked_layers_refuse_original_ln_after_false(interop_dir: Path) -> None:
    model = _tiny("tiny-distilbert")
    with pytest.raises(AdapterConfigError, match="original_ln_after=False"):
        model.add_adapter("a", "seq_bn[original_ln_after=False]")
    assert "a" not in model.adapters_config.adapters  # nothing half-built
    bert = AutoAdapterModel.from_config(tiny_bert_config())
    bert.add_adapter("a", "seq_bn[original_ln_after=False]")  # BERT-style: supported


def test_cpu_kernels_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertModel

    on = adapters_core.init(BertModel(tiny_bert_config()))
    off = adapters_core.init(BertModel(tiny_bert_config()), cpu_kernels=False)
    assert any(type(m) is kernels.Dropout for m in on.modules())
    assert not any(type(m) is kernels.Dropout for m in off.modules())
    assert off.config._attn_implementation == "sdpa"
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    env_off = adapters_core.init(BertModel(tiny_bert_config()))
    assert not any(type(m) is kernels.Dropout for m in env_off.modules())


def test_attention_kernel_only_on_tested_model_types(interop_dir: Path) -> None:
    assert _tiny("tiny-llama").config._attn_implementation != kernels.ATTENTION_NAME
    bert = AutoAdapterModel.from_config(tiny_bert_config(attn_implementation="sdpa"))
    assert bert.config._attn_implementation == kernels.ATTENTION_NAME


def test_decoder_classification_reads_the_last_non_padding_token(interop_dir: Path) -> None:
    model = _tiny("tiny-llama")
    model.add_classification_head("c", num_labels=3)
    ids = torch.tensor([[11, 12, 13, 14, 15], [11, 12, 13, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[1:, :3]).logits
    assert torch.allclose(padded[1], alone[0], atol=1e-5)


@pytest.mark.parametrize(
    "arch", ["tiny-distilbert", "tiny-electra", "tiny-deberta-v2", "tiny-modernbert"]
)
def test_encoder_heads(interop_dir: Path, arch: str) -> None:
    model = _tiny(arch)
    model.add_adapter("a", "seq_bn", set_active=True)
    model.add_classification_head("cls", num_labels=3)
    model.add_classification_head("ml", num_labels=4, multilabel=True)
    model.add_tagging_head("tag", num_labels=5)
    model.add_qa_head("qa")
    ids = torch.randint(5, 400, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(input_ids=ids, head="cls").logits.shape == (2, 3)
        assert model(input_ids=ids, head="ml").logits.shape == (2, 4)
        assert model(input_ids=ids, head="tag").logits.shape == (2, 9, 5)
        assert model(input_ids=ids, head="qa").start_logits.shape == (2, 9)


@pytest.mark.parametrize(
    "arch", ["tiny-gpt2", "tiny-bart", "tiny-t5", "tiny-llama", "tiny-distilbert"]
)
def test_plain_model_after_init_runs_the_same_adapter(interop_dir: Path, arch: str) -> None:
    from transformers import AutoModel

    folder = INTEROP / arch / "double_seq_bn" / "a"
    flex = _tiny(arch)
    flex.load_adapter(folder, set_active=True)
    plain = adapters_core.init(AutoModel.from_pretrained(str(INTEROP / "models" / arch)).eval())
    plain.load_adapter(folder, set_active=True, with_head=False)
    ids = torch.randint(5, 400, (2, 7), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids}
    if flex.adapters_spec.is_encoder_decoder:
        inputs["decoder_input_ids"] = ids[:, :5]
    with torch.no_grad():
        expected = flex.adapter_base_model(**inputs).last_hidden_state
        got = plain(**inputs).last_hidden_state
        plain.set_active_adapters(None)
        without = plain(**inputs).last_hidden_state
    assert torch.equal(got, expected)
    assert not torch.allclose(without, expected, atol=1e-4)
