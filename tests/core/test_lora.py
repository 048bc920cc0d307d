"""The LoRA family (LoRA, IA3, DoRA, VeRA): training, round trips, merging, composition, and the
layouts the reference library cannot handle (fused QKV, Conv1D, grouped-query attention)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from adapters_core import (
    AdapterConfig,
    Average,
    BatchSplit,
    BertAdapterModel,
    Parallel,
    Split,
    Stack,
)
from adapters_core.errors import AdapterError, CompositionError
from adapters_core.methods.base import ModelHandle
from adapters_core.methods.lora import LinearTarget, lora_layers
from adapters_core.methods.lora_method import LoRAMethod
from adapters_core.model_mixin import ModelAdaptersConfig

from .conftest import tiny_bert_config, tiny_inputs

VARIANTS = ["lora", "ia3", "dora", "vera", "dvora"]
WIDE = {
    "lora": "lora[intermediate_lora=True, output_lora=True, attn_matrices=['q','k','v']]",
    "ia3": "ia3[output_lora=True, attn_matrices=['q','k','v']]",
    "dora": "dora[alpha=16, intermediate_lora=True, output_lora=True]",
    "vera": "vera[intermediate_lora=True, output_lora=True, attn_matrices=['q','k','v']]",
    "dvora": "dvora[intermediate_lora=True]",
}


def _fresh() -> BertAdapterModel:
    torch.manual_seed(0)
    return BertAdapterModel(tiny_bert_config()).eval()


def _perturb(model: nn.Module, seed: int = 5) -> None:
    """Move every adapter weight off its (often neutral) initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".loras." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _logits(model: nn.Module, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return model(**tiny_inputs(), **kwargs).logits


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_step_save_load_gives_identical_outputs(tmp_path: Path, variant: str) -> None:
    model = _fresh()
    model.add_adapter("a", config=WIDE[variant])
    model.add_classification_head("a", num_labels=2)
    base = _logits(model, head="a")
    model.train_adapter("a")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**tiny_inputs(), labels=torch.tensor([0, 1, 0])).loss.backward()
    optimizer.step()
    model.eval()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(".loras.a." in k for k in changed), changed
    assert all(".loras.a." in k or k.startswith("heads.a.") for k in changed), changed
    _perturb(model)
    expected = _logits(model)
    assert (expected - base).abs().max() > 1e-3  # the adapter does something

    model.save_adapter(tmp_path, "a")
    assert (tmp_path / "adapter.safetensors").is_file()
    other = _fresh()
    assert other.load_adapter(tmp_path, set_active=True) == "a"
    assert other.adapters_config.adapters["a"] == model.adapters_config.adapters["a"]
    assert torch.equal(_logits(other), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_merged_equals_unmerged_and_reset_restores_the_base(variant: str) -> None:
    model = _fresh()
    with torch.no_grad():  # biases make IA3's and DoRA's output scaling visible
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_adapter("a", config=WIDE[variant])
    model.add_classification_head("a", num_labels=2)
    _perturb(model)
    model.set_active_adapters("a")
    unmerged = _logits(model)
    model.set_active_adapters(None)
    plain = _logits(model, head="a")
    model.set_active_adapters("a")

    model.merge_adapter("a")
    assert (_logits(model) - unmerged).abs().max() <= 1e-5
    # a merged layer runs nn.Linear's own forward: no adapter code on the inference path
    layers = lora_layers(model)
    assert layers and all(type(m).forward is nn.Linear.forward for m in layers)
    # merged weights serve every setup: the adapter is inside the layer now
    model.set_active_adapters(None)
    assert (_logits(model, head="a") - unmerged).abs().max() <= 1e-5

    model.reset_adapter()
    assert all(type(m).forward is not nn.Linear.forward for m in layers)
    assert (_logits(model, head="a") - plain).abs().max() <= 1e-5
    state = model.state_dict()
    for key, value in base_weights.items():
        assert (state[key] - value).abs().max() <= 1e-5, key
    model.set_active_adapters("a")
    assert (_logits(model) - unmerged).abs().max() <= 1e-5


def test_merge_refuses_a_second_adapter_and_non_lora() -> None:
    model = _fresh()
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="lora")
    model.add_adapter("bn", config="seq_bn")
    model.merge_adapter("a")
    model.merge_adapter("a")  # merging the merged one again changes nothing
    with pytest.raises(AdapterError, match="already merged"):
        model.merge_adapter("b")
    with pytest.raises(AdapterError, match="cannot be merged"):
        model.merge_adapter("bn")


def test_vera_shared_matrices_stored_once_and_vectors_compact(tmp_path: Path) -> None:
    model = _fresh()
    model.add_adapter("a", config=WIDE["vera"])
    model.train_adapter("a")
    model.save_adapter(tmp_path, "a")
    state = load_file(tmp_path / "adapter.safetensors")
    shared = [k for k in state if ".shared_parameters.a." in k]
    assert sorted(shared) == ["bert.shared_parameters.a.lora_A", "bert.shared_parameters.a.lora_B"]
    # sized for the widest layer it serves (intermediate: 37 rows; output: 37 inputs)
    assert state["bert.shared_parameters.a.lora_A"].shape == (8, 64)
    assert state["bert.shared_parameters.a.lora_B"].shape == (64, 8)
    vectors = [v for k, v in state.items() if k.endswith(("vera_D", "vera_B"))]
    assert vectors and all(v.dim() == 1 for v in vectors)
    # the random matrices stay frozen, the vectors train
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("shared_parameters" in n for n in trainable)
    assert any(n.endswith("vera_D") for n in trainable)


def test_vera_reads_diagonal_and_full_reference_matrices(tmp_path: Path) -> None:
    model = _fresh()
    model.add_adapter("a", config="vera")
    model.add_classification_head("a", num_labels=2)
    _perturb(model)
    model.set_active_adapters("a")
    expected = _logits(model)
    model.save_adapter(tmp_path, "a")
    state = load_file(tmp_path / "adapter.safetensors")
    # the reference's layout: the vectors as diagonal matrices
    as_matrices = {
        k: torch.diag(v) if k.endswith(("vera_D", "vera_B")) else v for k, v in state.items()
    }
    torch.save(as_matrices, tmp_path / "pytorch_adapter.bin")
    (tmp_path / "adapter.safetensors").unlink()
    other = _fresh()
    other.load_adapter(tmp_path, set_active=True)
    assert (_logits(other) - expected).abs().max() <= 1e-6
    assert all(p.dim() == 1 for n, p in other.named_parameters() if n.endswith("vera_D"))
    # a trained reference file has full matrices: those are used as they are
    key = next(k for k in as_matrices if k.endswith("vera_D"))
    as_matrices[key] = as_matrices[key] + 5.0  # off the diagonal too
    torch.save(as_matrices, tmp_path / "pytorch_adapter.bin")
    third = _fresh()
    third.load_adapter(tmp_path, set_active=True)
    assert (_logits(third) - expected).abs().max() > 1e-5
    dense = [m for n, m in third.named_modules() if n.endswith("loras.a") and m.dense]
    assert len(dense) == 1
    a, b = dense[0]._ab()
    manual = dense[0].vera_B @ b @ dense[0].vera_D @ a
    assert torch.allclose(dense[0].delta_weight(), manual)
    assert torch.equal(dense[0].vera_D.detach(), as_matrices[key])


def test_compositions() -> None:
    model = _fresh()
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="lora[attn_matrices=['q','k','v']]")
    model.add_adapter("c", config="ia3")
    model.add_classification_head("h", num_labels=2)
    _perturb(model)
    inputs = tiny_inputs()

    def run(setup: object) -> torch.Tensor:
        model.set_active_adapters(setup)
        with torch.no_grad():
            return model(**inputs, head="h").logits

    a, b = run("a"), run("b")
    split = run(BatchSplit("a", "b", batch_sizes=[1, 2]))
    assert torch.allclose(split[:1], a[:1], atol=1e-6)
    assert torch.allclose(split[1:], b[1:], atol=1e-6)
    assert not torch.allclose(run(Stack("a", "b")), b, atol=1e-4)
    assert run(Average("a", "b", weights=[0.5, 0.5])).shape == a.shape
    assert run(Stack("a", "c")).shape == a.shape
    model.set_active_adapters(Parallel("a", "b"))
    with torch.no_grad():
        out = model(**inputs, head="h").logits
    assert out.shape == (6, 2)
    assert torch.allclose(out[:3], a, atol=1e-6) and torch.allclose(out[3:], b, atol=1e-6)
    # refused when activated, not only when a forward reaches a LoRA layer
    with pytest.raises(CompositionError, match="Split composition is not supported by LoRA"):
        model.set_active_adapters(Split("a", "b", splits=[6, 6]))


def test_config_strings_and_reference_defaults() -> None:
    lora = AdapterConfig.load("lora")
    assert lora.to_dict()["architecture"] == "lora"
    assert AdapterConfig.load("ia3")["composition_mode"] == "scale"
    assert AdapterConfig.load("dora")["use_dora"] is True
    assert AdapterConfig.load("vera")["vera_d"] == 0.1
    assert AdapterConfig.load("lora[r=4, alpha=16]")["r"] == 4
    for bad in ("ia3[r=2]", "lora[composition_mode='mul']", "lora[attn_matrices=['x']]"):
        with pytest.raises(Exception, match="r ==|composition_mode|attn_matrices"):
            AdapterConfig.load(bad)


# --- layouts the reference cannot handle, on bare layers -----------------------------------


class _Attention(nn.Module):
    """q/k/v as separate layers, k and v narrower (grouped-query attention), or fused."""

    def __init__(self, fused: bool, conv1d: bool = False, kv: int = 32) -> None:
        super().__init__()
        if fused:
            self.qkv = Conv1D(192, 64) if conv1d else nn.Linear(64, 192)
        else:
            self.q, self.k, self.v = nn.Linear(64, 64), nn.Linear(64, kv), nn.Linear(64, kv)
        self.up = nn.Linear(64, 37)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "qkv"):
            return torch.cat([self.qkv(x), self.up(x)], -1)
        return torch.cat([self.q(x), self.k(x), self.v(x), self.up(x)], -1)


def _targets(model: nn.Module) -> list[LinearTarget]:
    if hasattr(model, "qkv"):
        out = [LinearTarget(0, "qkv", "selfattn", None, ("q", "k", "v"))]
    else:
        out = [LinearTarget(0, n, "selfattn", n) for n in ("q", "k", "v")]
    return out + [LinearTarget(0, "up", "intermediate")]


def _attach(model: _Attention, config: str) -> tuple[LoRAMethod, ModelAdaptersConfig]:
    method = LoRAMethod(targets=_targets)
    state = ModelAdaptersConfig()
    handle = ModelHandle(model, None, state)  # type: ignore[arg-type]
    method.add_adapter(handle, "a", AdapterConfig.load(config))
    state.set_active(Stack("a"))
    _perturb(model)
    return method, handle


def _split_copy(fused: _Attention) -> _Attention:
    """The same weights as three separate layers."""
    split = _Attention(fused=False, kv=64)
    w = fused.qkv.weight if isinstance(fused.qkv, nn.Linear) else fused.qkv.weight.t()
    with torch.no_grad():
        for i, layer in enumerate((split.q, split.k, split.v)):
            layer.weight.copy_(w[i * 64 : (i + 1) * 64])
            layer.bias.copy_(fused.qkv.bias[i * 64 : (i + 1) * 64])
        split.up.load_state_dict(fused.up.state_dict())
    return split


@pytest.mark.parametrize("conv1d", [False, True])
@pytest.mark.parametrize("variant", ["lora", "ia3", "dora", "vera"])
def test_fused_qkv_equals_separate_projections(conv1d: bool, variant: str) -> None:
    config = WIDE[variant].replace("output_lora=True, ", "")
    torch.manual_seed(1)
    fused = _Attention(fused=True, conv1d=conv1d)
    split = _split_copy(fused)
    x = torch.randn(2, 5, 64)
    plain = fused(x)
    method, handle = _attach(fused, config)
    _attach(split, config)
    # copy the fused adapter's weights into the separate layers' adapters, part by part
    module = fused.qkv.loras["a"]
    parts = fused.qkv._lora_parts["a"]
    with torch.no_grad():
        for i, part in enumerate(parts):
            target = getattr(split, part).loras["a"]
            rows = slice(i * 64, (i + 1) * 64)
            for name, p in target.named_parameters():
                source = dict(module.named_parameters())[name]
                if name == "lora_A":
                    p.copy_(source[i * module.r : (i + 1) * module.r])
                elif name == "vera_D":
                    p.copy_(source[i * module.r : (i + 1) * module.r])
                else:  # lora_B, m.weight, vera_B: output rows
                    p.copy_(source[rows])
        split.up.loras["a"].load_state_dict(fused.up.loras["a"].state_dict())
        shared_split = split.shared_parameters["a"] if variant == "vera" else None
        if shared_split is not None:
            shared_split.load_state_dict(fused.shared_parameters["a"].state_dict())
    with torch.no_grad():
        out = fused(x)
        assert (out - plain).abs().max() > 1e-3
        assert (out - split(x)).abs().max() <= 1e-5
        method.merge(handle, "a")
        assert (fused(x) - out).abs().max() <= 1e-5
        method.unmerge(handle, "a")
        fused.qkv.loras["a"].train(False)
        assert (fused(x) - out).abs().max() <= 1e-5


@pytest.mark.parametrize("variant", ["lora", "ia3", "dora", "vera"])
def test_grouped_query_attention_merge_and_round_trip(variant: str) -> None:
    torch.manual_seed(2)
    model = _Attention(fused=False, kv=32)
    x = torch.randn(2, 5, 64)
    plain = model(x)
    method, handle = _attach(model, WIDE[variant].replace("output_lora=True, ", ""))
    with torch.no_grad():
        out = model(x)
        assert (out - plain).abs().max() > 1e-3
        method.merge(handle, "a")
        assert (model(x) - out).abs().max() <= 1e-5
        method.unmerge(handle, "a")
        assert (model(x) - out).abs().max() <= 1e-5
        handle.state.set_active(None)
        assert (model(x) - plain).abs().max() <= 1e-5


def test_vera_on_a_bare_model_saves_and_loads_its_shared_matrices(tmp_path: Path) -> None:
    """On a model without a head prefix the shared matrices are top-level keys."""
    from transformers import BertModel

    import adapters_core

    torch.manual_seed(0)
    model = adapters_core.init(BertModel(tiny_bert_config()).eval())
    model.add_adapter("a", config="vera", set_active=True)
    _perturb(model)
    with torch.no_grad():
        expected = model(**tiny_inputs()).last_hidden_state
    model.save_adapter(tmp_path, "a")
    assert "shared_parameters.a.lora_A" in load_file(tmp_path / "adapter.safetensors")
    torch.manual_seed(1)  # the shared matrices come from the file, not from the seed
    other = adapters_core.init(BertModel(tiny_bert_config()).eval())
    with torch.no_grad():
        other.load_state_dict(model.state_dict(), strict=False)
    other.load_adapter(tmp_path, set_active=True)
    with torch.no_grad():
        assert torch.equal(other(**tiny_inputs()).last_hidden_state, expected)
