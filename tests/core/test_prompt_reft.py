"""Prompt tuning and ReFT (LoReFT, NoReFT, DiReFT) on every architecture's tiny model: add, train
a step (only adapter and head weights change), save as safetensors, reload: identical outputs
and generation; cached generation equals greedy decoding by full forward passes; heads see the
original positions; DiReFT stays DiReFT after a reload."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GenerationConfig

from adapters_core import AutoAdapterModel, Stack
from adapters_core.configuration import AdapterConfig
from adapters_core.errors import AdapterConfigError, CompositionError
from adapters_core.models import SPECS
from adapters_core.weights import adapter_filter

from .conftest import INTEROP, TINY_MODEL_TYPES, add_task_head, signed_step, task_batch

# every architecture for prompt tuning and LoReFT; NoReFT and DiReFT differ from LoReFT only in
# the unit's arithmetic, so one encoder, decoder and encoder-decoder each (keeps the suite short)
CASES = [(arch, m) for m in ("prompt_tuning", "loreft") for arch in TINY_MODEL_TYPES] + [
    (arch, m) for m in ("noreft", "direft") for arch in ("tiny-bert", "tiny-gpt2", "tiny-t5")
]
_BASES: dict[str, Any] = {}


def _fresh(arch: str) -> Any:
    if arch not in _BASES:  # loading is the slow part: keep a pristine copy per model
        model = AutoAdapterModel.from_pretrained(str(INTEROP / "models" / arch))
        if hasattr(model, "generation_config"):
            model.generation_config.forced_eos_token_id = None  # BART: greedy loop comparable
        _BASES[arch] = model
    torch.manual_seed(0)
    return copy.deepcopy(_BASES[arch])


def _batch(kind: str) -> dict[str, torch.Tensor]:
    return task_batch(kind, padded=True, mask_labels=True)


def _generation_config(model: Any) -> GenerationConfig:
    config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=None)
    config.pad_token_id = 0
    config.decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
    return config


def greedy_by_full_forward(model: Any, prompt: torch.Tensor, kind: str, steps: int) -> list:
    """Greedy decoding that runs the whole sequence through the model at every step."""
    mask = torch.ones_like(prompt)
    with torch.no_grad():
        if kind == "decoder":
            seq = prompt
            for _ in range(steps):
                logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
                seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
        else:
            seq = torch.tensor([[model.config.decoder_start_token_id]])
            for _ in range(steps):
                logits = model(input_ids=prompt, attention_mask=mask, decoder_input_ids=seq).logits
                seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    return seq.tolist()


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_train_save_load_roundtrip(tmp_path: Path, arch: str, method: str) -> None:
    kind = SPECS[TINY_MODEL_TYPES[arch]].kind
    model = _fresh(arch)
    model.add_adapter("t", method)
    add_task_head(model, kind)
    model.train_adapter("t")
    batch = _batch(kind)
    changed = signed_step(model, batch)
    assert any(adapter_filter("t")(k) for k in changed), "the adapter did not train"
    frozen = [k for k in changed if not adapter_filter("t")(k) and not k.startswith("heads.t.")]
    assert frozen == []

    model.save_adapter(tmp_path / "t", "t")
    assert (tmp_path / "t" / "adapter.safetensors").is_file()
    fresh = _fresh(arch)
    fresh.load_adapter(tmp_path / "t", set_active=True)
    fresh.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if kind == "encoder-decoder":
        inputs["decoder_input_ids"] = batch["labels"]
    with torch.no_grad():
        a, b = model(**inputs).logits, fresh(**inputs).logits
        model.set_active_adapters(None)
        plain = model(**inputs).logits
        model.set_active_adapters("t")
    assert torch.equal(a, b)
    assert not torch.allclose(a, plain), "the adapter has no effect"
    if kind == "encoder":
        # heads see the original positions, prompt or not
        assert a.shape[0] == 2
        return
    assert a.shape[1] == inputs.get("decoder_input_ids", inputs["input_ids"]).shape[1]
    config = _generation_config(model)
    prompt = inputs["input_ids"][:1]
    with torch.no_grad():
        g1 = model.generate(input_ids=prompt, generation_config=config)
        g2 = fresh.generate(input_ids=prompt, generation_config=config)
    assert g1.tolist() == g2.tolist()
    # with a KV cache, each step intervenes where a full forward over the sequence does
    assert g1.tolist() == greedy_by_full_forward(model, prompt, kind, 5)


def test_direft_setting_survives_reload(tmp_path: Path) -> None:
    model = _fresh("tiny-llama")
    model.add_adapter("d", "direft", set_active=True)
    model.add_causal_lm_head("d")
    model.save_adapter(tmp_path / "d", "d")
    saved = json.loads((tmp_path / "d" / "adapter_config.json").read_text())
    assert saved["config"]["subtract_projection"] is False
    fresh = _fresh("tiny-llama")
    fresh.load_adapter(tmp_path / "d", set_active=True)
    assert fresh.adapters_config.adapters["d"]["subtract_projection"] is False
    ids = torch.randint(5, 400, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, fresh(input_ids=ids).logits)
    # the setting matters: the same weights read as LoReFT-style arithmetic give other outputs
    saved["config"]["subtract_projection"] = True
    (tmp_path / "d" / "adapter_config.json").write_text(json.dumps(saved))
    other = _fresh("tiny-llama")
    other.load_adapter(tmp_path / "d", set_active=True)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, other(input_ids=ids).logits)


def test_reference_direft_file_reads_its_missing_setting_as_the_reference_does() -> None:
    """A file without the key (the reference's own DiReFT files) is read as the reference reads
    it: subtract_projection=True."""
    config = AdapterConfig.load({"architecture": "reft", "orthogonality": False})
    assert config["subtract_projection"] is True


@pytest.mark.parametrize("arch", ["tiny-bert", "tiny-modernbert"])
def test_prompt_tuning_token_heads_have_the_original_length(arch: str) -> None:
    model = _fresh(arch)
    model.add_adapter("p", "prompt_tuning[prompt_length=4]", set_active=True)
    model.add_tagging_head("tag", num_labels=3)
    model.add_qa_head("qa")
    ids = torch.randint(5, 400, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    out = model(input_ids=ids, attention_mask=mask, head="tag", labels=torch.zeros_like(ids))
    assert out.logits.shape == (2, 9, 3)
    assert torch.isfinite(out.loss)
    qa = model(input_ids=ids, attention_mask=mask, head="qa")
    assert qa.start_logits.shape == (2, 9)


def test_prompt_after_bos_keeps_the_first_token_first() -> None:
    model = _fresh("tiny-llama")
    model.add_adapter("p", "prompt_tuning[prompt_length=3, combine='prefix_after_bos']")
    model.add_causal_lm_head("p")
    model.set_active_adapters("p")
    model.eval()
    ids = torch.randint(5, 400, (1, 6), generator=torch.Generator().manual_seed(4))
    prompt = model.model.prompt_tuning.prompt_tunings["p"].prompt_embedding.weight
    words = model.model.get_input_embeddings()(ids)
    # the sequence the layers see: token 0, the prompt, tokens 1..
    manual = torch.cat([words[:, :1], prompt[None], words[:, 1:]], dim=1)
    model.set_active_adapters(None)
    with torch.no_grad():
        reference = model(inputs_embeds=manual).logits
    model.set_active_adapters("p")
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[1] == 6
    assert torch.allclose(logits[:, 1:], reference[:, 4:], atol=1e-5)
    assert torch.allclose(logits[:, :1], reference[:, :1], atol=1e-5)


def test_prompt_from_string_initialises_from_the_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 7, "world": 9}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    model = _fresh("tiny-bert")
    model.config.tokenizer_name_or_path = str(tmp_path)
    model.add_adapter(
        "p",
        "prompt_tuning[prompt_length=5, prompt_init=from_string, prompt_init_text='hello world']",
    )
    weight = model.bert.prompt_tuning.prompt_tunings["p"].prompt_embedding.weight
    words = model.bert.embeddings.word_embeddings.weight
    expected = words[[7, 9, 7, 9, 7]]
    assert torch.equal(weight, expected)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ("prompt_tuning[prompt_length=0]", "prompt_length"),
        ("prompt_tuning[combine='suffix']", "combine"),
        ("prompt_tuning[prompt_init=from_string]", "prompt_init_text"),
        ("loreft[prefix_positions=0]", "suffix_positions"),
        ("loreft[layers='first']", "layers"),
        ("noreft[r=0]", "r"),
    ],
)
def test_bad_configs_name_the_field(config: str, field: str) -> None:
    with pytest.raises(AdapterConfigError, match=field):
        AdapterConfig.load(config)


@pytest.mark.parametrize("method", ["loreft", "prompt_tuning"])
def test_first_adapter_only(method: str) -> None:
    model = _fresh("tiny-bert")
    model.add_adapter("m", method)
    model.add_adapter("b", "seq_bn")
    model.set_active_adapters(Stack("m", "b"))  # as the reference: the method runs first
    with pytest.raises(CompositionError, match="first adapter"):
        model.set_active_adapters(Stack("b", "m"))


def test_reft_layers_selects_layers() -> None:
    model = _fresh("tiny-bart")
    model.add_adapter("r", "loreft[layers=[0, 3]]")
    assert sorted(model.get_adapter("r")) == [0, 3]


@pytest.mark.parametrize("method", ["prompt_tuning[prompt_length=4]", "loreft"])
def test_plain_causal_lm_after_init_generates_as_full_forward(method: str) -> None:
    """A transformers LlamaForCausalLM after init(): logits of the original length, and
    generate() equals greedy decoding by full forward passes."""
    from transformers import AutoModelForCausalLM

    import adapters_core

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(INTEROP / "models" / "tiny-llama"))
    model = adapters_core.init(model)
    model.add_adapter("p", method, set_active=True)
    with torch.no_grad():  # a prompt / intervention that changes the tokens
        for name, p in model.named_parameters():
            if ".prompt_tunings." in name or ".refts." in name:
                p.add_(torch.randn_like(p))
    model.eval()
    ids = torch.randint(5, 400, (1, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[1] == 7
        generated = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=5,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert generated.tolist() == greedy_by_full_forward(model, ids, "decoder", 5)
