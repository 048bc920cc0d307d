"""PEFT interop: adapters written by the `peft` package load here with PEFT's outputs, and LoRA /
IA3 exported here load in `peft` with ours (adapters_core/peft_format.py)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import adapters_core
from adapters_core.errors import AdapterConfigError, UnsafeWeightsError

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


def _bert() -> Any:
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=32,
    )
    return transformers.BertModel(cfg)


def _gpt2() -> Any:
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=100, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2Model(cfg)


def _llama() -> Any:
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=100,
    )
    return transformers.LlamaModel(cfg)


def _bart() -> Any:
    cfg = transformers.BartConfig(
        vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=40,
        decoder_ffn_dim=40,
        max_position_embeddings=32,
    )
    return transformers.BartModel(cfg)


def _t5() -> Any:
    cfg = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4
    )
    return transformers.T5Model(cfg)


IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 11], [7, 7, 60, 21, 2, 13, 50]])


def _out(model: Any) -> torch.Tensor:
    kwargs: dict[str, Any] = {"input_ids": IDS}
    if model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = IDS[:, :5]
    with torch.no_grad():
        return model(**kwargs).last_hidden_state


def _peft_folder(base: Any, peft_config: Any, folder: Path) -> torch.Tensor:
    """Save a PEFT adapter with random non-zero weights (PEFT starts LoRA at B = 0 and IA3 at 1,
    which would hide a wrong mapping); returns PEFT's output."""
    model = peft.get_peft_model(copy.deepcopy(base), peft_config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "ia3_l" in name:
                offset = 1.0 if "ia3_l" in name else 0.0
                p.copy_(offset + 0.3 * torch.randn(p.shape, generator=gen))
    model.eval()
    model.save_pretrained(folder)
    return _out(model)


def _ours(base: Any) -> Any:
    model = adapters_core.init(copy.deepcopy(base))
    model.eval()
    return model


CASES = {
    "bert-lora": (_bert, lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"])),
    "bert-lora-patterns": (
        _bert,
        lambda: peft.LoraConfig(
            r=4,
            lora_alpha=6,
            use_rslora=True,
            target_modules=["query", "key", "output.dense"],
            layers_to_transform=[1],
            rank_pattern={"key": 2},
            alpha_pattern={"query": 3},
        ),
    ),
    "bert-ia3": (_bert, lambda: peft.IA3Config(target_modules=["key", "value", "intermediate.dense"], feedforward_modules=[])),
    "gpt2-lora-fused": (_gpt2, lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)),
    "gpt2-ia3-fused": (_gpt2, lambda: peft.IA3Config(target_modules=["c_attn", "mlp.c_fc"], feedforward_modules=[], fan_in_fan_out=True)),
    "llama-lora": (_llama, lambda: peft.LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"])),
    # PEFT's default IA3 for Llama: down_proj scales its input (a feed-forward module)
    "llama-ia3-default": (_llama, lambda: peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])),
    # self-attention only: the cross-attention layers our config also covers stay neutral
    "bart-lora-selfattn": (_bart, lambda: peft.LoraConfig(r=2, lora_alpha=4, target_modules=["self_attn.q_proj", "self_attn.v_proj", "fc1"])),
    "t5-ia3": (_t5, lambda: peft.IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=[])),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_with_peft_outputs_and_exports_back(case: str, tmp_path: Path) -> None:
    make, make_config = CASES[case]
    torch.manual_seed(0)
    base = make().eval()
    want = _peft_folder(base, make_config(), tmp_path / "peft")
    assert (_out(base) - want).abs().max() > 1e-3  # the adapter changes something

    ours = _ours(base)
    name = ours.load_adapter(tmp_path / "peft", set_active=True)  # recognised as PEFT
    assert name == "peft"
    assert (_out(ours) - want).abs().max() < TOL

    ours.save_adapter(tmp_path / "back", name, format="peft")
    saved = json.loads((tmp_path / "back" / "adapter_config.json").read_text())
    assert saved["peft_type"] in ("LORA", "IA3")
    back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "back").eval()
    assert (_out(back) - want).abs().max() < TOL


def test_lora_trained_here_loads_in_peft(tmp_path: Path) -> None:
    """Our own adapters: partial fused QKV (GPT-2 q and v of c_attn) and a BERT IA3."""
    torch.manual_seed(0)
    for base, config in (
        (_gpt2().eval(), "lora[r=4, alpha=12, attn_matrices=['q','v'], output_lora=True]"),
        (_bert().eval(), "ia3[leave_out=[0]]"),
        (_llama().eval(), "lora[r=2, alpha=2, intermediate_lora=True, leave_out=[1]]"),
    ):
        ours = _ours(base)
        ours.add_adapter("mine", config=config, set_active=True)
        with torch.no_grad():
            for name, p in ours.named_parameters():
                if ".loras.mine." in name:
                    p.add_(0.2 * torch.randn_like(p))
        want = _out(ours)
        assert (want - _out(base)).abs().max() > 1e-3
        folder = tmp_path / base.config.model_type
        ours.save_adapter(folder, "mine", format="peft")
        back = peft.PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
        assert (_out(back) - want).abs().max() < TOL
        # and round trip through the PEFT format here
        again = _ours(base)
        again.load_adapter(folder, load_as="again", set_active=True)
        assert (_out(again) - want).abs().max() < TOL


def test_flexible_model_loads_peft_from_a_task_model(tmp_path: Path) -> None:
    """PEFT wrapped BertForSequenceClassification (keys bert.encoder...); an AdapterModel and a
    bare BertModel both find those layers."""
    torch.manual_seed(0)
    task = transformers.BertForSequenceClassification(_bert().config).eval()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    peft_model = peft.get_peft_model(copy.deepcopy(task), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    peft_model.eval()
    peft_model.save_pretrained(tmp_path)
    with torch.no_grad():
        want = peft_model.base_model.model.bert(input_ids=IDS).last_hidden_state
    bare = _ours(task.bert)
    bare.load_adapter(tmp_path, load_as="x", set_active=True)
    assert (_out(bare) - want).abs().max() < TOL


def _peft_raw(folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def _lora_tensors(path: str, r: int = 2, width: int = 32) -> dict[str, torch.Tensor]:
    return {
        f"base_model.model.{path}.lora_A.weight": torch.randn(r, width),
        f"base_model.model.{path}.lora_B.weight": torch.randn(width, r),
    }


Q0 = "encoder.layer.0.attention.self.query"


@pytest.mark.parametrize(
    ("config", "tensors", "message"),
    [
        ({"bias": "all"}, {}, "bias='all'"),
        ({"modules_to_save": ["classifier"]}, {}, "modules_to_save"),
        ({"use_dora": True}, {}, "DoRA"),
        (
            {},
            _lora_tensors("embeddings.word_embeddings"),
            "not among the linear layers",
        ),
        ({}, {"base_model.model.pooler.dense.weight": torch.randn(32, 32)}, "not one of"),
        ({"peft_type": "LOHA"}, {}, "LOHA"),
    ],
)
def test_peft_folders_that_cannot_be_represented_are_refused(
    tmp_path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], message: str
) -> None:
    full = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "bias": "none", **config}
    folder = _peft_raw(tmp_path / "p", full, {**_lora_tensors(Q0), **tensors})
    model = _ours(_bert())
    with pytest.raises(AdapterConfigError, match=message):
        model.load_adapter(folder)
    assert not model.adapters_config.adapters  # nothing half-added


def test_ia3_input_scaling_without_equivalent_is_refused(tmp_path: Path) -> None:
    """BERT's FFN output has GELU before it: scaling its input is no output scaling here."""
    base = _bert().eval()
    cfg = peft.IA3Config(
        target_modules=["key", "output.dense"], feedforward_modules=["output.dense"]
    )
    _peft_folder(base, cfg, tmp_path / "ia3")
    model = _ours(base)
    with pytest.raises(AdapterConfigError, match="feed-forward module .*scales the layer's input"):
        model.load_adapter(tmp_path / "ia3")
    assert not model.adapters_config.adapters


def test_peft_bin_goes_through_the_safe_reader(tmp_path: Path) -> None:
    """adapter_model.bin: plain tensors load; a pickle that imports anything else is refused."""
    base = _bert().eval()
    want = _peft_folder(
        base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query"]), tmp_path / "p"
    )
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "p" / "adapter_model.safetensors")
    (tmp_path / "p" / "adapter_model.safetensors").unlink()
    torch.save(tensors, tmp_path / "p" / "adapter_model.bin")
    model = _ours(base)
    model.load_adapter(tmp_path / "p", set_active=True)
    assert (_out(model) - want).abs().max() < TOL

    class Boom:
        def __reduce__(self) -> Any:
            return (print, ("pwned",))

    (tmp_path / "p" / "adapter_model.bin").write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(UnsafeWeightsError):
        _ours(base).load_adapter(tmp_path / "p")


def test_export_refuses_what_peft_computes_differently(tmp_path: Path) -> None:
    model = _ours(_bert())
    model.add_adapter("d", config="dora")
    model.add_adapter("b", config="seq_bn")
    with pytest.raises(AdapterConfigError, match="only plain LoRA and IA3"):
        model.save_adapter(tmp_path / "d", "d", format="peft")
    with pytest.raises(AdapterConfigError, match="no PEFT equivalent"):
        model.save_adapter(tmp_path / "b", "b", format="peft")


def test_leave_out_drops_layers_of_a_peft_adapter(tmp_path: Path) -> None:
    """AdapterDrop on a PEFT folder: the left-out layer runs as the plain model (as if PEFT's
    lora_B were zero there)."""
    torch.manual_seed(0)
    base = _bert().eval()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    _peft_folder(base, config, tmp_path / "p")
    model = _ours(base)
    model.load_adapter(tmp_path / "p", load_as="x", set_active=True, leave_out=[1])
    assert 1 not in model.get_adapter("x") and 0 in model.get_adapter("x")
    assert model.adapters_config.adapters["x"].leave_out == [1]

    reference = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "p").eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "layer.1." in name and "lora_B" in name:
                p.zero_()
    assert (_out(model) - _out(reference)).abs().max() < TOL


def _prompt_tuning_built() -> bool:
    from adapters_core.configuration import AdapterConfig

    try:
        AdapterConfig.load("prompt_tuning")
    except AdapterConfigError:
        return False
    return True


needs_prompt_tuning = pytest.mark.skipif(
    not _prompt_tuning_built(), reason="prompt tuning is not built on this branch"
)


def _lm(kind: str) -> Any:
    if kind == "llama":
        return transformers.LlamaForCausalLM(_llama().config)
    return transformers.GPT2LMHeadModel(_gpt2().config)


@needs_prompt_tuning
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_peft_prompt_tuning_loads_on_decoders(kind: str, tmp_path: Path) -> None:
    """PEFT's virtual tokens before the token embeddings: our decoder prompt tuning, same logits
    on the real tokens (left padding included), and generate() gives greedy decoding by PEFT's
    full forward passes (PEFT's own cached generate departs from those on Llama in this
    transformers version, so its forward is the reference)."""
    torch.manual_seed(0)
    base = _lm(kind).eval()
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    model = peft.get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_()
    model.eval()
    model.save_pretrained(tmp_path)
    mask = torch.ones_like(IDS)
    mask[1, :2] = 0
    with torch.no_grad():
        want = model(input_ids=IDS, attention_mask=mask).logits[:, 4:]
        greedy = IDS[:1]
        for _ in range(5):
            step = model(input_ids=greedy).logits[:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, step], dim=1)
    ours = _ours(base)
    ours.load_adapter(tmp_path, load_as="prompt", set_active=True)
    assert ours.adapters_config.adapters["prompt"].prompt_length == 4
    with torch.no_grad():
        got = ours(input_ids=IDS, attention_mask=mask).logits
        tokens = ours.generate(input_ids=IDS[:1], max_new_tokens=5, do_sample=False)
    assert (got - want).abs().max() < TOL
    assert tokens.tolist() == greedy.tolist()


@needs_prompt_tuning
def test_peft_prompt_tuning_on_an_encoder_is_refused(tmp_path: Path) -> None:
    base = _bert().eval()
    config = peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4)
    peft.get_peft_model(copy.deepcopy(base), config).save_pretrained(tmp_path)
    with pytest.raises(AdapterConfigError, match="before the embeddings' position embeddings"):
        _ours(base).load_adapter(tmp_path)


def test_peft_prefix_tuning_is_refused_with_the_reason(tmp_path: Path) -> None:
    base = transformers.GPT2LMHeadModel(_gpt2().config).eval()
    config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    peft.get_peft_model(copy.deepcopy(base), config).save_pretrained(tmp_path)
    model = _ours(base)
    with pytest.raises(AdapterConfigError, match="real tokens take positions after the prefix"):
        model.load_adapter(tmp_path)
    assert not model.adapters_config.adapters
