"""Safe weight I/O: safetensors header checks, the pickle opcode scan, configs, old formats."""

from __future__ import annotations

import builtins
import collections
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters_core.errors import (
    AdapterConfigError,
    AdapterNotFoundError,
    CorruptWeightsError,
    UnsafeWeightsError,
)
from adapters_core.loading import (
    find_weights_file,
    is_peft_folder,
    read_json_config,
    read_state_dict,
    upgrade_legacy_config,
    upgrade_legacy_keys,
    validate_safetensors_header,
    write_state_dict,
)

INTEROP = Path(__file__).resolve().parents[2].parent / "shared/interop/adapters-1.3.0"


def tensors() -> dict[str, torch.Tensor]:
    return {
        "layer.adapters.a.adapter_down.0.weight": torch.randn(4, 8),
        "layer.adapters.a.adapter_down.0.bias": torch.zeros(4, dtype=torch.float16),
        "layer.adapters.a.adapter_up.weight": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "empty": torch.zeros(0),
    }


def assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype
        assert torch.equal(loaded[key], value)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adapter.safetensors", "pytorch_adapter.bin"])
def test_write_then_read(tmp_path, name):
    expected = tensors()
    path = write_state_dict(expected, tmp_path / name)
    assert_same(read_state_dict(path), expected)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_legit_torch_save_loads(tmp_path):
    expected = collections.OrderedDict(tensors())
    expected["param"] = torch.nn.Parameter(torch.ones(3))
    torch.save(expected, tmp_path / "w.bin")
    loaded = read_state_dict(tmp_path / "w.bin")
    assert_same(loaded, {k: v.detach() for k, v in expected.items()})
    assert not isinstance(loaded["param"], torch.nn.Parameter)


def test_legacy_torch_format_loads(tmp_path):
    expected = tensors()
    torch.save(expected, tmp_path / "w.bin", _use_new_zipfile_serialization=False)
    assert_same(read_state_dict(tmp_path / "w.bin"), expected)


def test_shared_memory_tensors_are_saved_as_copies(tmp_path):
    pool = torch.randn(4, 4)
    state = {"a.pool": pool, "b.pool": pool, "c.view": pool[1]}
    path = write_state_dict(state, tmp_path / "shared.safetensors")
    loaded = read_state_dict(path)
    for key, value in state.items():
        assert torch.equal(loaded[key], value)


def test_metadata_is_written(tmp_path):
    path = write_state_dict(tensors(), tmp_path / "m.safetensors", metadata={"format": "pt"})
    assert validate_safetensors_header(path)["__metadata__"] == {"format": "pt"}


def test_interop_files_load():
    files = sorted(INTEROP.glob("*/*/*/*.bin")) + sorted(INTEROP.glob("*/*/*/*.safetensors"))
    assert len(files) > 40
    for path in files:
        state = read_state_dict(path)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_missing_file(tmp_path):
    with pytest.raises(AdapterNotFoundError):
        read_state_dict(tmp_path / "adapter.safetensors")


# ---------------------------------------------------------------------------------------------
# safetensors header
# ---------------------------------------------------------------------------------------------


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def write_raw(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(content)
    return path


def test_truncated_safetensors(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(16, 16)}, good)
    content = good.read_bytes()
    path = write_raw(tmp_path, content[:-100])
    with pytest.raises(CorruptWeightsError, match="data area"):
        read_state_dict(path)
    path = write_raw(tmp_path, content[:20])
    with pytest.raises(CorruptWeightsError, match="exceeds the file size"):
        read_state_dict(path)
    path = write_raw(tmp_path, content[:5])
    with pytest.raises(CorruptWeightsError, match="truncated"):
        read_state_dict(path)


def test_offsets_outside_the_file(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}
    path = write_raw(tmp_path, safetensors_bytes(header, bytes(16)))
    with pytest.raises(CorruptWeightsError, match="outside the data area"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, 12, "needs 8"),
        ({"w": {"dtype": "EVIL", "shape": [2], "data_offsets": [0, 8]}}, 8, "unknown dtype"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, "invalid shape"),
        ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4, "invalid shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, 8, "invalid data_offsets"),
        ({"w": {"dtype": "F32", "shape": [2]}}, 8, "exactly dtype, shape and data_offsets"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            12,
            "overlaps",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            12,
            "gap of 4 bytes",
        ),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8, "cover 4 bytes"),
        ({"__metadata__": {"a": 1}}, 0, "__metadata__"),
    ],
)
def test_bad_headers(tmp_path, header, data, message):
    path = write_raw(tmp_path, safetensors_bytes(header, bytes(data)))
    with pytest.raises(CorruptWeightsError, match=message):
        read_state_dict(path)


def test_header_not_json(tmp_path):
    path = write_raw(tmp_path, struct.pack("<Q", 6) + b"{nope}")
    with pytest.raises(CorruptWeightsError, match="not valid JSON"):
        read_state_dict(path)


def test_header_length_absurd(tmp_path):
    path = write_raw(tmp_path, struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(CorruptWeightsError, match="implausible header length"):
        read_state_dict(path)


def test_duplicate_tensor_names(tmp_path):
    raw = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = write_raw(tmp_path, struct.pack("<Q", len(raw)) + raw + b"\x00")
    with pytest.raises(CorruptWeightsError, match="duplicate key"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------------------
# Pickles
# ---------------------------------------------------------------------------------------------


class CreatesFile:
    """Unpickling this would create (truncate) ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def _assert_refused(path: Path, created: Path) -> None:
    with pytest.raises(UnsafeWeightsError, match=r"builtins\.open|not a tensor-rebuild"):
        read_state_dict(path)
    assert not created.exists()


def test_pickle_that_creates_a_file_is_refused(tmp_path):
    created = tmp_path / "created_by_pickle"
    path = tmp_path / "pytorch_adapter.bin"
    path.write_bytes(pickle.dumps({"w": CreatesFile(str(created))}, protocol=2))
    _assert_refused(path, created)


def test_protocol_4_stack_global_is_refused(tmp_path):
    created = tmp_path / "created_by_pickle"
    path = tmp_path / "pytorch_adapter.bin"
    path.write_bytes(pickle.dumps({"w": CreatesFile(str(created))}, protocol=4))
    _assert_refused(path, created)


def test_torch_zip_with_malicious_pickle_is_refused(tmp_path):
    created = tmp_path / "created_by_pickle"
    path = tmp_path / "pytorch_adapter.bin"
    torch.save({"w": torch.ones(2), "x": CreatesFile(str(created))}, path)
    _assert_refused(path, created)


def test_legacy_torch_file_with_malicious_pickle_is_refused(tmp_path):
    created = tmp_path / "created_by_pickle"
    path = tmp_path / "pytorch_adapter.bin"
    torch.save({"x": CreatesFile(str(created))}, path, _use_new_zipfile_serialization=False)
    _assert_refused(path, created)


def test_unresolvable_stack_global_is_refused(tmp_path):
    # STACK_GLOBAL whose module/name come from a computed value, not literal strings.
    payload = b"\x80\x04" + b"\x8c\x05torch" + b"\x94" + b"N" + b"\x93" + b"."
    path = tmp_path / "w.bin"
    path.write_bytes(payload)
    with pytest.raises(UnsafeWeightsError, match="cannot be resolved statically"):
        read_state_dict(path)


def test_extension_registry_opcode_is_refused(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x80\x02\x82\x01.")  # EXT1 1
    with pytest.raises(UnsafeWeightsError, match="EXT1"):
        read_state_dict(path)


def test_pickle_of_non_tensors_is_corrupt(tmp_path):
    path = tmp_path / "w.bin"
    torch.save({"w": [1, 2, 3]}, path)
    with pytest.raises(CorruptWeightsError, match="str -> tensor"):
        read_state_dict(path)


def test_truncated_pickle(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(CorruptWeightsError):
        read_state_dict(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(CorruptWeightsError, match="not a torch weights file"):
        read_state_dict(path)


def test_torchscript_archive_is_refused(tmp_path):
    module = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "w.bin"
    torch.jit.save(module, str(path))
    with pytest.raises(UnsafeWeightsError, match="TorchScript"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------------------
# Configs and folders
# ---------------------------------------------------------------------------------------------


def test_read_json_config_errors(tmp_path):
    with pytest.raises(AdapterNotFoundError, match="config file not found"):
        read_json_config(tmp_path / "adapter_config.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }')
    with pytest.raises(AdapterConfigError, match="line 2"):
        read_json_config(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(AdapterConfigError, match="JSON object"):
        read_json_config(listed)
    good = tmp_path / "good.json"
    good.write_text('{"config": {"reduction_factor": 16}}')
    assert read_json_config(good) == {"config": {"reduction_factor": 16}}


def test_find_weights_file_prefers_safetensors(tmp_path):
    assert find_weights_file(tmp_path) is None
    (tmp_path / "pytorch_adapter.bin").write_bytes(b"")
    assert find_weights_file(tmp_path).name == "pytorch_adapter.bin"
    (tmp_path / "adapter.safetensors").write_bytes(b"")
    assert find_weights_file(tmp_path).name == "adapter.safetensors"
    assert find_weights_file(tmp_path, prefer_safetensors=False).name == "pytorch_adapter.bin"
    (tmp_path / "pytorch_model_head.bin").write_bytes(b"")
    assert find_weights_file(tmp_path, "head").name == "pytorch_model_head.bin"
    assert find_weights_file(tmp_path, "fusion") is None


def test_peft_folder_is_recognised(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    assert is_peft_folder(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"config": {}, "version": "adapters.1.3.0"}')
    assert not is_peft_folder(tmp_path)


# ---------------------------------------------------------------------------------------------
# Old formats
# ---------------------------------------------------------------------------------------------


def test_upgrade_v1_config():
    old = {
        "config": {
            "non_linearity": "gelu",
            "reduction_factor": 16,
            "invertible_adapter": {
                "block_type": "nice",
                "non_linearity": "relu",
                "reduction_factor": 2,
            },
        },
        "model_name": "bert-base-uncased",
        "name": "sst",
        "type": "text_task",
    }
    new = upgrade_legacy_config(old)
    assert new["config"] == {
        "non_linearity": "gelu_new",
        "reduction_factor": 16,
        "inv_adapter": "nice",
        "inv_adapter_reduction_factor": 2,
    }
    assert new["type"] == "text_task"
    assert old["config"]["non_linearity"] == "gelu"  # pure: the input is untouched


def test_upgrade_gelu_orig_and_bare_config():
    assert upgrade_legacy_config({"non_linearity": "gelu_orig"}) == {"non_linearity": "gelu"}


def test_current_configs_are_not_renamed():
    current = {"config": {"non_linearity": "gelu"}, "version": "adapters.1.3.0"}
    assert upgrade_legacy_config(current) == current
    at3 = {"config": {"non_linearity": "gelu"}, "version": "3.2.1"}
    assert upgrade_legacy_config(at3) == at3


def test_old_lora_alpha_becomes_r():
    old = {"config": {"architecture": "lora", "r": 8, "alpha": 16}, "version": "adapters.1.0.1"}
    assert upgrade_legacy_config(old)["config"]["alpha"] == 8
    new = {"config": {"architecture": "lora", "r": 8, "alpha": 16}, "version": "adapters.1.1.0"}
    assert upgrade_legacy_config(new)["config"]["alpha"] == 16


def test_upgrade_legacy_keys():
    one = torch.ones(1)
    old = {
        "bert.encoder.layer.0.attention.output.attention_text_task_adapters.sst.adapter_down.0.weight": one,
        "bert.encoder.layer.0.output.layer_text_task_adapters.sst.adapter_up.weight": one,
        "bert.encoder.layer.1.output.layer_text_lang_adapters.de.adapter_up.bias": one,
        "bert.encoder.layer.1.attention.output.attention_text_lang_adapters.de.adapter_up.bias": one,
        "bert.invertible_lang_adapters.de.F.0.weight": one,
        "heads.sst.1.weight": one,
    }
    assert sorted(upgrade_legacy_keys(old)) == sorted(
        [
            "bert.encoder.layer.0.attention.output.adapters.sst.adapter_down.0.weight",
            "bert.encoder.layer.0.output.adapters.sst.adapter_up.weight",
            "bert.encoder.layer.1.output.adapters.de.adapter_up.bias",
            "bert.encoder.layer.1.attention.output.adapters.de.adapter_up.bias",
            "bert.invertible_adapters.de.F.0.weight",
            "heads.sst.1.weight",
        ]
    )
