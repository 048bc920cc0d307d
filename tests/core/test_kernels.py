"""The CPU training kernels: same distribution as PyTorch's dropout, same attention as SDPA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import adapters_core
from adapters_core import BertAdapterModel, kernels, kernels_decoder
from adapters_core.configuration import LoRAConfig

from .conftest import tiny_bert_config, tiny_inputs


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = kernels.dropout(x, p)
    kept = y != 0
    # 1e6 Bernoulli draws: the standard deviation of the kept fraction is below 5e-4
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, 2.0 * y.detach())


def test_dropout_outside_training_or_at_p0_is_the_identity() -> None:
    x = torch.randn(4, 8)
    assert kernels.dropout(x, 0.1, training=False) is x
    assert torch.equal(kernels.dropout(x, 0.0), x)
    assert torch.equal(kernels.Dropout(0.3).eval()(x), x)


def test_dropout_masks_follow_the_torch_seed() -> None:
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    first = kernels.dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(kernels.dropout(x, 0.2), first)


def _qkv(mask: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8, generator=g) for _ in range(3))
    attn_mask = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    attn_mask[1, :, :, 6:] = False
    attn_mask[1, :, 0, :] = False  # a query that sees no key: zeros, as in SDPA's math path
    return q, k, v, (attn_mask if mask else None)


@pytest.mark.parametrize("with_mask", [False, True])
def test_attention_matches_sdpa_when_nothing_is_dropped(with_mask: bool) -> None:
    q, k, v, mask = _qkv(with_mask)
    # p so small that no element is dropped; the scale 1 / (1 - p) is then 1 in float32
    ours = kernels._attention_with_dropout(q, k, v, mask, 1e-12, None)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_attention_dropout_drops_probabilities_at_rate_p() -> None:
    torch.manual_seed(0)
    q = torch.zeros(8, 4, 64, 16)  # uniform attention: every probability is 1/64
    v = torch.eye(64).expand(8, 4, 64, 64)  # the output row is the dropped probability row
    out = kernels._attention_with_dropout(q, q, v, None, 0.25, None)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 64 / 0.75))


def test_model_trains_with_the_kernels_and_infers_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertAdapterModel(tiny_bert_config(attn_implementation="sdpa"))
    assert model.config._attn_implementation == kernels.ATTENTION_NAME
    assert all(
        type(m) is kernels.Dropout for m in model.modules() if isinstance(m, torch.nn.Dropout)
    )
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    model.train_adapter("a")
    assert all(
        type(m) is kernels.Dropout for m in model.modules() if isinstance(m, torch.nn.Dropout)
    )

    inputs = tiny_inputs()
    model.eval()
    with torch.no_grad():
        before = model(**inputs).logits
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        stock = model(**inputs).logits
    model.config._attn_implementation = kernels.ATTENTION_NAME
    torch.testing.assert_close(before, stock, rtol=0, atol=0)

    model.train()
    out = model(**inputs, labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    # the kernel's name stays out of config.json: the saved model loads without adapters_core
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert kernels.ATTENTION_NAME not in json.dumps(saved)


def test_init_puts_the_kernels_into_a_static_model() -> None:
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_bert_config(attn_implementation="sdpa"))
    adapters_core.init(model)
    assert model.config._attn_implementation == kernels.ATTENTION_NAME
    assert type(model.dropout) is kernels.Dropout


def test_eager_attention_is_left_alone() -> None:
    model = BertAdapterModel(tiny_bert_config(attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def test_dropout_falls_back_to_torch_for_half_precision() -> None:
    x = torch.ones(1000, dtype=torch.bfloat16)
    torch.manual_seed(1)
    ours = kernels.dropout(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(ours, F.dropout(x, 0.5, True))


# --- frozen decoders: fused RMSNorm and rotary embedding (adapters_core/kernels_decoder.py) ---

DECODERS = ["tiny-llama", "tiny-mistral", "tiny-qwen2"]


def _decoder(arch: str, cpu_kernels: bool, method: str = "lora") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from .conftest import INTEROP

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(INTEROP / "models" / arch))
    assert model.config.model_type in kernels_decoder.DECODER_MODEL_TYPES
    adapters_core.init(model, cpu_kernels=cpu_kernels)
    config = LoRAConfig(selfattn_lora=True, intermediate_lora=True, r=4, alpha=8)
    model.add_adapter("a", config=config if method == "lora" else method)
    model.train_adapter("a")
    # non-trivial adapter and norm weights, so every gradient term is exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "norm" in name:
                p.add_(
                    torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1
                )
    return model


def _train_step(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.randint(3, 500, (2, 16), generator=torch.Generator().manual_seed(5))
    logits = model(input_ids=ids).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("arch", DECODERS)
def test_decoder_kernels_train_like_transformers_own_code(arch: str) -> None:
    fused, stock = _decoder(arch, cpu_kernels=True), _decoder(arch, cpu_kernels=False)
    norms = [m for m in fused.modules() if "RMSNorm" in type(m).__name__]
    assert norms and all(type(m).__module__ == kernels_decoder.__name__ for m in norms)
    assert not any(type(m).__module__ == kernels_decoder.__name__ for m in stock.modules())

    calls = {"norm": 0, "rotary": 0}
    norm_forward, rotary_forward = kernels_decoder.rms_norm, kernels_decoder.apply_rotary

    def count(key: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*args):  # noqa: ANN002, ANN202
            calls[key] += 1
            return fn(*args)

        return wrapped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels_decoder, "rms_norm", count("norm", norm_forward))
        patch.setattr(kernels_decoder, "apply_rotary", count("rotary", rotary_forward))
        logits, grads = _train_step(fused)
        # the fused paths ran (the first layer's input norm sees the frozen embeddings: no
        # gradient flows there, transformers' code runs)
        layers = fused.config.num_hidden_layers
        assert calls == {"norm": 2 * layers, "rotary": 2 * layers}
        # switched off: transformers' own code only, though the rotary dispatcher is installed
        stock_logits, stock_grads = _train_step(stock)
        assert calls == {"norm": 2 * layers, "rotary": 2 * layers}
    torch.testing.assert_close(logits, stock_logits, rtol=1e-5, atol=1e-5)
    assert grads.keys() == stock_grads.keys() and len(grads) > 4
    for name, grad in grads.items():
        torch.testing.assert_close(grad, stock_grads[name], rtol=1e-5, atol=1e-5, msg=name)


def test_decoder_kernels_leave_inference_to_transformers() -> None:
    fused, stock = _decoder("tiny-llama", True).eval(), _decoder("tiny-llama", False).eval()
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            fused(input_ids=ids).logits, stock(input_ids=ids).logits, rtol=0, atol=0
        )


def test_decoder_kernels_follow_the_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from .conftest import INTEROP

    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    model = adapters_core.init(
        AutoModelForCausalLM.from_pretrained(str(INTEROP / "models" / "tiny-llama"))
    )
    assert not any(type(m).__module__ == kernels_decoder.__name__ for m in model.modules())
    monkeypatch.setenv(kernels.ENV_SWITCH, "1")
    model = adapters_core.init(
        AutoModelForCausalLM.from_pretrained(str(INTEROP / "models" / "tiny-llama"))
    )
    assert type(model.model.norm).__name__ == "FusedLlamaRMSNorm"


def test_fused_rms_norm_gradients_are_analytic() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.rand(16, dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    torch.autograd.gradcheck(lambda a, b: kernels_decoder.rms_norm(a, b, 1e-6), (x, w))
    expected = w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(kernels_decoder.rms_norm(x, w, 1e-6), expected)


def test_fused_rotary_matches_rotate_half_and_its_gradient() -> None:
    from transformers.models.llama import modeling_llama

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 7, 4, 8, dtype=torch.float64, generator=g).transpose(1, 2)  # a strided view
    q.requires_grad_()
    angles = torch.randn(1, 7, 4, dtype=torch.float64, generator=g)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    torch.autograd.gradcheck(
        lambda t: kernels_decoder.apply_rotary(t, cos.unsqueeze(1), sin.unsqueeze(1)), (q,)
    )
    original = getattr(
        modeling_llama.apply_rotary_pos_emb, "__wrapped__", modeling_llama.apply_rotary_pos_emb
    )
    expected, _ = original(q, q, cos, sin)
    torch.testing.assert_close(
        kernels_decoder.apply_rotary(q, cos.unsqueeze(1), sin.unsqueeze(1)), expected
    )


def test_a_model_with_decoder_kernels_copies_and_its_norms_pickle() -> None:
    import copy
    import pickle

    model = _decoder("tiny-llama", True)
    norm = pickle.loads(pickle.dumps(model.model.norm))  # the fused class has a module-level name
    assert type(norm) is type(model.model.norm)
    torch.testing.assert_close(norm.weight, model.model.norm.weight)
    twin = copy.deepcopy(model)
    assert type(twin.model.norm) is type(model.model.norm)
    expected = _train_step(model)[1]
    for name, grad in _train_step(twin)[1].items():
        torch.testing.assert_close(grad, expected[name], msg=name)
