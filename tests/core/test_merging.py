"""average_adapter / average_head (adapters_core/merging.py): weighted sums of adapters, the LoRA
strategies and task arithmetic, checked against computations done by hand here."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertModel, GPT2Config, GPT2Model

import adapters_core
from adapters_core import BertAdapterModel
from adapters_core.errors import AdapterConfigError
from adapters_core.merging import _renamed
from adapters_core.weights import adapter_filter, collect

from .conftest import tiny_bert_config

IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 11], [7, 7, 60, 21, 2, 13, 50]])


def _perturb(model, names, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            for t in collect(model, adapter_filter(name)).values():
                t.add_(scale * torch.randn(t.shape, generator=gen))


def _hidden(model, setup=None):
    model.set_active_adapters(setup)
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


def _bert():
    torch.manual_seed(0)
    return adapters_core.init(BertModel(tiny_bert_config()).eval())


def _gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, bos_token_id=0, eos_token_id=0)
    return adapters_core.init(GPT2Model(cfg).eval())


@pytest.mark.parametrize(
    "config",
    [
        "seq_bn",
        "par_bn",
        "seq_bn_inv",
        "compacter[reduction_factor=8]",
        "lora",
        "ia3",
        "dora",
        "vera",
        "seq_bn|lora",
    ],
)
def test_linear_average_is_the_weighted_sum_of_every_tensor(config):
    model = _bert()
    model.add_adapter("a", config=config)
    model.add_adapter("b", config=config)
    _perturb(model, ["a", "b"])
    model.average_adapter("avg", ["a", "b"], weights=[1.0, 3.0])  # normalised: 0.25, 0.75
    got = collect(model, adapter_filter("avg"))
    a = _renamed(collect(model, adapter_filter("a")), "a", "avg")
    b = _renamed(collect(model, adapter_filter("b")), "b", "avg")
    assert got.keys() == a.keys() == b.keys() and got
    for key in got:
        assert torch.allclose(got[key], 0.25 * a[key] + 0.75 * b[key], atol=1e-6), key
    # shared tensors are averaged too (Compacter's PHM rule, VeRA's matrices)
    if config.startswith(("compacter", "vera")):
        assert any("shared_parameters.avg." in k for k in got)
    # one adapter, weight 1: the same adapter
    model.average_adapter("copy", ["a"])
    assert torch.allclose(_hidden(model, "copy"), _hidden(model, "a"), atol=1e-6)


def test_task_arithmetic_with_negative_weights_adds_and_subtracts_lora_updates():
    """lora_delta_w_svd at full rank: the merged adapter's update is Σ λᵢ sᵢ Bᵢ Aᵢ, checked
    against the plain model with that update added to its weights by hand."""
    model = _bert()
    for name in ("x", "y", "z"):
        model.add_adapter(name, config="lora[r=2, alpha=4, attn_matrices=['q','v']]")
    _perturb(model, ["x", "y", "z"], scale=0.3)
    lams = {"x": 1.0, "y": -1.0, "z": 0.5}
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for layer, ref in zip(
            adapters_core.methods.lora.lora_layers(model),
            adapters_core.methods.lora.lora_layers(plain),
            strict=True,
        ):
            for name, lam in lams.items():
                m = layer.loras[name]
                ref.weight += lam * m.scaling * (m.lora_B @ m.lora_A)
    want = _hidden(plain, None)
    model.average_adapter(
        "merged",
        list(lams),
        weights=list(lams.values()),
        combine_strategy="lora_delta_w_svd",
        svd_rank=6,  # three rank-2 updates: exact
        normalize_weights=False,
    )
    assert model.adapters_config.adapters["merged"].r == 6
    assert torch.allclose(_hidden(model, "merged"), want, atol=1e-5)
    # with another rank than the inputs' the update keeps its size (the reference's is off by
    # r / svd_rank): rank 6 of 6 again, but alpha/r different from the inputs'
    model.average_adapter(
        "merged2",
        list(lams),
        weights=list(lams.values()),
        combine_strategy="lora_delta_w_svd",
        svd_rank=8,
        normalize_weights=False,
    )
    assert torch.allclose(_hidden(model, "merged2"), want, atol=1e-5)


def test_delta_w_svd_truncates_to_the_best_rank_k_update():
    model = _bert()
    for name in ("x", "y"):
        model.add_adapter(name, config="lora[r=4, alpha=4]")
    _perturb(model, ["x", "y"], scale=0.3)
    model.average_adapter("m", ["x", "y"], combine_strategy="lora_delta_w_svd", svd_rank=2)
    for layer in adapters_core.methods.lora.lora_layers(model):
        if "m" not in layer.loras:
            continue
        x, y, m = (layer.loras[n] for n in ("x", "y", "m"))
        delta = 0.5 * x.scaling * (x.lora_B @ x.lora_A) + 0.5 * y.scaling * (y.lora_B @ y.lora_A)
        u, s, vh = torch.linalg.svd(delta)
        best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
        assert torch.allclose(m.scaling * (m.lora_B @ m.lora_A), best, atol=1e-5)


def test_delta_w_svd_on_gpt2_fused_qkv():
    """Per q/k/v part of c_attn (the reference refuses GPT-2)."""
    model = _gpt2()
    for name in ("x", "y"):
        model.add_adapter(name, config="lora[r=2, alpha=2, attn_matrices=['q','v']]")
    _perturb(model, ["x", "y"], scale=0.3)
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for layer, ref in zip(
            adapters_core.methods.lora.lora_layers(model),
            adapters_core.methods.lora.lora_layers(plain),
            strict=True,
        ):
            for name, lam in (("x", 2.0), ("y", -1.0)):
                m = layer.loras[name]
                rows = layer._row_index(name) or [slice(None)]
                delta = lam * m.scaling * m.delta_weight()
                size = delta.shape[0] // len(rows)
                for i, s in enumerate(rows):
                    ref.weight_oi()[s] += delta[i * size : (i + 1) * size]
    model.average_adapter(
        "m",
        ["x", "y"],
        weights=[2.0, -1.0],
        combine_strategy="lora_delta_w_svd",
        svd_rank=4,
        normalize_weights=False,
    )
    assert torch.allclose(_hidden(model, "m"), _hidden(plain, None), atol=1e-5)


def test_linear_only_negate_b():
    model = _bert()
    for name in ("x", "y"):
        model.add_adapter(name, config="lora")
    _perturb(model, ["x", "y"])
    model.average_adapter(
        "n", {"x": 1.0, "y": -0.5}, combine_strategy="lora_linear_only_negate_b",
        normalize_weights=False,
    )  # fmt: skip
    for layer in adapters_core.methods.lora.lora_layers(model):
        x, y, n = (layer.loras[k] for k in ("x", "y", "n"))
        assert torch.allclose(n.lora_A, x.lora_A + 0.5 * y.lora_A, atol=1e-6)
        assert torch.allclose(n.lora_B, x.lora_B - 0.5 * y.lora_B, atol=1e-6)


def test_leave_out_carries_over_to_the_average():
    """AdapterDrop: adapters without layer 0 average into one without layer 0."""
    model = _bert()
    for name in ("x", "y"):
        model.add_adapter(name, config="lora[leave_out=[0], intermediate_lora=True]")
    _perturb(model, ["x", "y"])
    for strategy in ("linear", "lora_delta_w_svd"):
        name = f"m_{strategy}"
        model.average_adapter(name, ["x", "y"], combine_strategy=strategy, svd_rank=8)
        assert 0 not in model.get_adapter(name) and 1 in model.get_adapter(name)


@pytest.mark.parametrize(
    ("configs", "kwargs", "message"),
    [
        (("lora", "lora[r=4]"), {}, "different configurations"),
        (("lora", "lora"), {"combine_strategy": "mean"}, "Unknown combine_strategy"),
        (("seq_bn", "seq_bn"), {"combine_strategy": "lora_delta_w_svd"}, "'linear'"),
        (("ia3", "ia3"), {"combine_strategy": "lora_delta_w_svd", "svd_rank": 1}, "A and B"),
        (("vera", "vera"), {"combine_strategy": "lora_linear_only_negate_b"}, "only"),
        (("lora", "lora"), {"combine_strategy": "lora_delta_w_svd"}, "svd_rank"),
        (("lora", "lora"), {"weights": [1.0, -1.0]}, "sum to 0"),
    ],
)
def test_bad_averages_are_refused(configs, kwargs, message):
    model = _bert()
    model.add_adapter("a", config=configs[0])
    model.add_adapter("b", config=configs[1])
    with pytest.raises(AdapterConfigError, match=message):
        model.average_adapter("avg", ["a", "b"], **kwargs)
    assert "avg" not in model.adapters_config.adapters


def test_dropout_may_differ():
    model = _bert()
    model.add_adapter("a", config="lora[dropout=0.1]")
    model.add_adapter("b", config="lora[dropout=0.0, init_weights='bert']")
    model.average_adapter("avg", ["a", "b"])
    assert "avg" in model.adapters_config.adapters


def test_average_head_is_the_weighted_sum_of_the_heads():
    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config()).eval()
    model.add_classification_head("h1", num_labels=3)
    model.add_classification_head("h2", num_labels=3)
    _perturb_heads = [p for n, p in model.named_parameters() if n.startswith("heads.")]
    with torch.no_grad():
        for p in _perturb_heads:
            p.add_(torch.randn_like(p))
    model.average_head("avg", ["h1", "h2"], weights=[0.2, 0.8])
    state = model.state_dict()
    for key in [k for k in state if k.startswith("heads.avg.")]:
        k1, k2 = key.replace(".avg.", ".h1."), key.replace(".avg.", ".h2.")
        assert torch.allclose(state[key], 0.2 * state[k1] + 0.8 * state[k2], atol=1e-6)
    model.add_classification_head("other", num_labels=5)
    with pytest.raises(AdapterConfigError, match="different configurations"):
        model.average_head("bad", ["h1", "other"])


@pytest.mark.parametrize(
    "config",
    ["prefix_tuning", "prefix_tuning_flat", "prompt_tuning", "loreft", "direft", "mam", "unipelt"],
)
def test_linear_average_covers_the_methods_of_issue_14(config):
    """The same weighted sum for the methods other branches add (found by their key markers);
    skipped where the method is not built on this branch."""
    from adapters_core.configuration import AdapterConfig

    try:
        AdapterConfig.load(config)
    except AdapterConfigError:
        pytest.skip(f"{config} is not built on this branch")
    model = _bert()
    model.add_adapter("a", config=config)
    model.add_adapter("b", config=config)
    _perturb(model, ["a", "b"])
    model.average_adapter("avg", ["a", "b"], weights=[1.0, 3.0])
    got = collect(model, adapter_filter("avg"))
    a = _renamed(collect(model, adapter_filter("a")), "a", "avg")
    b = _renamed(collect(model, adapter_filter("b")), "b", "avg")
    assert got.keys() == a.keys() and got
    for key in got:
        assert torch.allclose(got[key], 0.25 * a[key] + 0.75 * b[key], atol=1e-6), key
    assert torch.isfinite(_hidden(model, "avg")).all()
