"""Prefix tuning, MAM and UniPELT on every architecture of the table: add, train a step (only
adapter and head weights change), save as safetensors, reload into a fresh model: identical
outputs and generated tokens; cached generate() equals greedy decoding by full forward passes;
the shared prefix pool is written once and both file layouts load; eject, leave_out, GQA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import GenerationConfig

from adapters_core import AutoAdapterModel, BatchSplit, Parallel, Stack
from adapters_core.configuration import AdapterConfig, ConfigUnion, PrefixTuningConfig
from adapters_core.errors import AdapterConfigError, AdapterError, CompositionError
from adapters_core.models import SPECS
from adapters_core.weights import adapter_filter

from .conftest import INTEROP, TINY_MODEL_TYPES, add_task_head, signed_step, task_batch

ARCHS = dict(TINY_MODEL_TYPES)
# small prefixes keep the tiny models fast; unions exercise the gates and the bottlenecks
METHODS = ["prefix_tuning[prefix_length=4, bottleneck_size=16]", "mam", "unipelt"]
# flat prefixes differ only in the generator: one architecture of each kind
FLAT = "prefix_tuning[prefix_length=3, flat=True]"
# the unions on every architecture are marked slow (CI runs them); one of each kind stays fast
FAST_UNION_ARCHS = ("tiny-bert", "tiny-llama", "tiny-t5")
CASES = [
    pytest.param(a, m, marks=() if m == METHODS[0] or a in FAST_UNION_ARCHS else pytest.mark.slow)
    for a in ARCHS
    for m in METHODS
]
CASES += [(a, FLAT) for a in ("tiny-distilbert", "tiny-mistral", "tiny-t5")]


def _fresh(arch: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch), **kwargs)


def _batch(kind: str) -> dict[str, torch.Tensor]:
    return task_batch(kind, padded=True)  # the prefix columns must not disturb padding


def _inputs(kind: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if kind == "encoder-decoder":
        inputs["decoder_input_ids"] = batch["labels"]
    return inputs


def _gen_config(model: torch.nn.Module) -> GenerationConfig:
    config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=None)
    config.pad_token_id = 0
    config.decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
    return config


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_train_save_load_roundtrip(tmp_path: Path, arch: str, method: str) -> None:
    kind = SPECS[ARCHS[arch]].kind
    model = _fresh(arch)
    model.add_adapter("t", method)
    add_task_head(model, kind)
    model.train_adapter("t")
    batch = _batch(kind)
    inputs = _inputs(kind, batch)
    model.eval()
    with torch.no_grad():
        off = model(**inputs).logits
        model.set_active_adapters(None)
        plain = model(**inputs).logits
        model.set_active_adapters("t")
    assert not torch.allclose(off, plain), "the prefixes changed nothing"

    changed = signed_step(model, batch)
    prefix_keys = [k for k in changed if ".prefix_tunings.t." in k]
    assert prefix_keys, "the step did not train the prefixes"
    frozen = [k for k in changed if not adapter_filter("t")(k) and not k.startswith("heads.t.")]
    assert frozen == []

    model.eval()
    model.save_adapter(tmp_path / "t", "t")
    with safe_open(str(tmp_path / "t" / "adapter.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if ".prefix_tuning.pool." in k]  # the pool once
    assert [k for k in keys if ".prefix_tunings.t." in k]
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    fresh.eval()
    with torch.no_grad():
        a, b = model(**inputs).logits, fresh(**inputs).logits
    assert torch.equal(a, b)
    if kind != "encoder":
        config = _gen_config(model)
        prompt = inputs["input_ids"][:1]
        with torch.no_grad():
            g1 = model.generate(input_ids=prompt, generation_config=config)
            g2 = fresh.generate(input_ids=prompt, generation_config=config)
        assert g1.tolist() == g2.tolist()


def _greedy_by_full_forward(model: torch.nn.Module, prompt: torch.Tensor, steps: int) -> list:
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids.tolist()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama", "tiny-qwen2"])
def test_cached_generation_equals_full_forward_greedy(arch: str, impl: str) -> None:
    """The KV cache holds the model's own keys only: prefixes are added at every step."""
    model = _fresh(arch, attn_implementation=impl)
    model.add_adapter("t", "prefix_tuning[prefix_length=5, bottleneck_size=16]")
    model.add_causal_lm_head("t")
    with torch.no_grad():  # a trained-looking prefix, large enough to steer the tokens
        for p in model.adapter_base_model.prefix_tuning.parameters():
            p.normal_(0, 1.0)
    model.set_active_adapters("t")
    model.eval()
    prompt = torch.tensor([[11, 57, 203, 99, 4]])
    with torch.no_grad():
        cached = model.generate(input_ids=prompt, generation_config=_gen_config(model))
    assert cached.tolist() == _greedy_by_full_forward(model, prompt, 5)


def test_sdpa_and_eager_agree() -> None:
    """The prefix columns are visible under both mask formats (float and boolean)."""
    outs = []
    batch = _batch("decoder")
    for impl in ("eager", "sdpa"):
        model = _fresh("tiny-llama", attn_implementation=impl)
        model.add_adapter("t", "prefix_tuning[prefix_length=4, bottleneck_size=16]")
        model.add_causal_lm_head("t")
        model.set_active_adapters("t")
        with torch.no_grad():
            outs.append(model.eval()(**_inputs("decoder", batch)).logits)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


def test_grouped_query_attention_prefix_has_kv_heads() -> None:
    model = _fresh("tiny-llama")
    config = model.config
    assert config.num_key_value_heads < config.num_attention_heads  # the table's GQA case
    model.add_adapter("t", "prefix_tuning[prefix_length=4]")
    module = model.adapter_base_model.prefix_tuning.prefix_tunings["t"]["self_prefix"]
    head_dim = config.hidden_size // config.num_attention_heads
    assert module.key_values().shape == (4, 2 * config.num_hidden_layers, 2, head_dim)


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-bart", "tiny-bert"])
def test_eject_keeps_outputs_and_reloads_flat(tmp_path: Path, arch: str) -> None:
    kind = SPECS[ARCHS[arch]].kind
    model = _fresh(arch)
    model.add_adapter("t", "prefix_tuning[prefix_length=4, bottleneck_size=16]")
    add_task_head(model, kind)
    model.set_active_adapters("t")
    model.eval()
    inputs = _inputs(kind, _batch(kind))
    with torch.no_grad():
        before = model(**inputs).logits
    n_before = sum(p.numel() for p in model.adapter_base_model.prefix_tuning.parameters())
    model.eject_prefix_tuning("t")
    n_after = sum(p.numel() for p in model.adapter_base_model.prefix_tuning.parameters())
    with torch.no_grad():
        after = model(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert n_after < n_before
    assert model.adapters_config.adapters["t"]["flat"] is True
    model.save_adapter(tmp_path / "t", "t")
    saved = json.loads((tmp_path / "t" / "adapter_config.json").read_text())
    assert saved["config"]["flat"] is True
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(**inputs).logits, after)


def test_leave_out_and_skip_layers() -> None:
    model = _fresh("tiny-bart")
    model.add_adapter("t", "prefix_tuning[prefix_length=4, bottleneck_size=16, leave_out=[0, 2]]")
    model.add_seq2seq_lm_head("t")
    base = model.adapter_base_model
    group = base.prefix_tuning.prefix_tunings["t"]
    assert {k: m.n_layers for k, m in group.items()} == {
        "encoder_prefix": 1,
        "self_prefix": 1,
        "cross_prefix": 1,
    }
    assert not hasattr(base.encoder.layers[0].self_attn, "prefix_tuning")
    assert "t" in base.encoder.layers[1].self_attn.prefix_tuning.prefixes
    assert not hasattr(base.decoder.layers[0].self_attn, "prefix_tuning")
    inputs = _inputs("encoder-decoder", _batch("encoder-decoder"))
    model.eval()
    with torch.no_grad():
        model.set_active_adapters("t")
        full = model(**inputs).logits
        model.set_active_adapters("t", skip_layers=[1, 3])  # the remaining prefixed layers
        skipped = model(**inputs).logits
        model.set_active_adapters(None)
        plain = model(**inputs).logits
    assert not torch.allclose(full, plain)
    torch.testing.assert_close(skipped, plain, atol=1e-6, rtol=0)


def test_encoder_and_cross_prefix_switches() -> None:
    model = _fresh("tiny-t5")
    model.add_adapter("t", "prefix_tuning[encoder_prefix=False, cross_prefix=False]")
    assert set(model.adapter_base_model.prefix_tuning.prefix_tunings["t"]) == {"self_prefix"}


def test_reference_bin_layout_and_bin_of_ours_load(tmp_path: Path) -> None:
    """The reference repeats the pool under every layer; we write it once; both load, and a
    layer copy that differs from the pool is refused."""
    case = INTEROP / "tiny-llama" / "prefix_tuning" / "a"
    model = _fresh("tiny-llama", attn_implementation="eager")
    model.load_adapter(case, set_active=True)
    model.save_adapter(tmp_path / "bin", "a", use_safetensors=False)
    state = torch.load(tmp_path / "bin" / "pytorch_adapter.bin", weights_only=True)
    assert not [k for k in state if ".prefix_tuning.pool." in k]
    fresh = _fresh("tiny-llama", attn_implementation="eager")
    fresh.load_adapter(tmp_path / "bin", set_active=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, fresh.eval()(input_ids=ids).logits)

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in case.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    ref = torch.load(case / "pytorch_adapter.bin", weights_only=True)
    key = next(k for k in ref if ".prefix_tuning.pool." in k and k.endswith("wte.weight"))
    ref[key] = ref[key] + 1
    torch.save(ref, broken / "pytorch_adapter.bin")
    with pytest.raises(AdapterError, match="differs from the pool"):
        _fresh("tiny-llama").load_adapter(broken)


def test_config_strings_and_unions_serialise_as_the_reference() -> None:
    union = AdapterConfig.load("prefix_tuning|parallel")
    assert isinstance(union, ConfigUnion)
    assert [c.to_dict().get("architecture") for c in union.configs] == ["prefix_tuning", None]
    for case in ("mam", "unipelt"):
        saved = json.loads((INTEROP / "tiny-bert" / case / "a" / "adapter_config.json").read_text())
        ours = AdapterConfig.load(case).to_dict()
        assert [c["architecture"] if "architecture" in c else None for c in ours["configs"]] == [
            c.get("architecture") for c in saved["config"]["configs"]
        ]
        assert set(ours["configs"][0]) == set(saved["config"]["configs"][0])
    assert (
        AdapterConfig.load("unipelt").to_dict()
        == AdapterConfig.load(
            json.loads(
                (INTEROP / "tiny-bert" / "unipelt" / "a" / "adapter_config.json").read_text()
            )["config"]
        ).to_dict()
    )
    assert PrefixTuningConfig(flat=True) == AdapterConfig.load("prefix_tuning_flat")
    with pytest.raises(Exception, match="prefix_length"):
        AdapterConfig.load("prefix_tuning[prefix_length=0]")


def test_stack_and_batch_split() -> None:
    """Stack puts the later adapter's prefix in front; BatchSplit gives each part its own."""
    model = _fresh("tiny-llama")
    model.add_adapter("a", "prefix_tuning[prefix_length=2, bottleneck_size=8]")
    model.add_adapter("b", "prefix_tuning[prefix_length=5, bottleneck_size=8]")
    model.add_causal_lm_head("t")
    model.eval()
    ids = torch.tensor([[11, 57, 203, 99], [7, 8, 9, 10]])
    with torch.no_grad():
        model.set_active_adapters("a")
        only_a = model(input_ids=ids).logits
        model.set_active_adapters("b")
        only_b = model(input_ids=ids).logits
        model.set_active_adapters(BatchSplit("a", "b", batch_sizes=[1, 1]))
        split = model(input_ids=ids).logits
        model.set_active_adapters(Stack("a", "b"))
        stacked = model(input_ids=ids).logits
    torch.testing.assert_close(split[0], only_a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(split[1], only_b[1], atol=1e-5, rtol=0)
    assert not torch.allclose(stacked, only_a) and not torch.allclose(stacked, only_b)
    with pytest.raises(CompositionError, match="prefix tuning"):
        from adapters_core import Fuse

        model.set_active_adapters(Fuse("a", "b"))


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama", "tiny-bart"])
def test_prefixed_decoder_stays_causal(arch: str, impl: str) -> None:
    """Without an attention mask (SDPA then has none), a position still sees only the prefix
    and the tokens before it: appending tokens leaves earlier logits unchanged."""
    kind = SPECS[ARCHS[arch]].kind
    model = _fresh(arch, attn_implementation=impl)
    model.add_adapter("t", "prefix_tuning[prefix_length=4, bottleneck_size=16]")
    add_task_head(model, kind)
    model.set_active_adapters("t")
    model.eval()
    ids = torch.tensor([[11, 57, 203, 99, 4, 8, 300, 21]])
    key = "decoder_input_ids" if kind == "encoder-decoder" else "input_ids"
    extra = {"input_ids": ids} if kind == "encoder-decoder" else {}
    with torch.no_grad():
        full = model(**{key: ids}, **extra).logits
        short = model(**{key: ids[:, :5]}, **extra).logits
    torch.testing.assert_close(short, full[:, :5], atol=1e-5, rtol=0)


def test_attention_the_prefixes_cannot_enter_is_refused() -> None:
    model = _fresh("tiny-llama")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(AdapterConfigError, match="flash_attention_2"):
        model.add_adapter("t", "prefix_tuning")
    assert "t" not in model.adapters_config.adapters


@pytest.mark.parametrize("flat", [False, True])
def test_load_with_leave_out_keeps_the_other_layers(tmp_path: Path, flat: bool) -> None:
    """AdapterDrop at load time: the left-out layers lose their prefix, the others keep theirs
    (the same outputs as the full adapter with those layers skipped)."""
    model = _fresh("tiny-llama")
    model.add_adapter("t", f"prefix_tuning[prefix_length=4, bottleneck_size=16, flat={flat}]")
    model.add_causal_lm_head("t")
    model.save_adapter(tmp_path / "t", "t")
    model.set_active_adapters("t", skip_layers=[0])
    ids = torch.tensor([[11, 57, 203, 99, 4]])
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
    fresh = _fresh("tiny-llama")
    fresh.load_adapter(tmp_path / "t", leave_out=[0], set_active=True)
    assert not hasattr(fresh.adapter_base_model.layers[0].self_attn, "prefix_tuning")
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(input_ids=ids).logits, expected, atol=1e-6, rtol=0)


def test_parallel_gives_each_channel_its_prefix() -> None:
    model = _fresh("tiny-llama")
    model.add_adapter("a", "prefix_tuning[prefix_length=6, bottleneck_size=8]")
    model.add_adapter("b", "prefix_tuning[prefix_length=2, bottleneck_size=8]")
    model.add_causal_lm_head("a")
    model.add_causal_lm_head("b")
    model.eval()
    ids = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 11]])
    with torch.no_grad():
        model.set_active_adapters("a")
        only_a = model(input_ids=ids).logits
        model.set_active_adapters("b")
        only_b = model(input_ids=ids).logits
        model.set_active_adapters(Parallel("a", "b"))
        out = model(input_ids=ids)
    torch.testing.assert_close(out[0].logits, only_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1].logits, only_b, atol=1e-5, rtol=0)
