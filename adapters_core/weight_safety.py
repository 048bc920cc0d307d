"""Reading untrusted weight files safely: safetensors headers are validated before any tensor
is read, and torch pickles are scanned opcode by opcode so that no import outside an allow-list
runs (a full unpickler never sees untrusted bytes). ``loading.py`` re-exports these names."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from adapters_core.errors import (
    AdapterNotFoundError,
    CorruptWeightsError,
    UnsafeWeightsError,
)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

# Element size in bytes of every dtype this reader accepts.
SAFETENSORS_DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}

# The safetensors library refuses headers over 100 MB; so do we.
_MAX_SAFETENSORS_HEADER = 100_000_000


def validate_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """Check a safetensors file's header without reading any tensor; return the parsed header.

    Raises CorruptWeightsError naming the first problem: a length that does not fit the file,
    invalid JSON, unknown dtypes, bad shapes, offsets outside the data area, overlapping or
    non-contiguous tensors.
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CorruptWeightsError(
                    f"{path}: truncated safetensors file ({file_size} bytes, no header length)"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > _MAX_SAFETENSORS_HEADER:
                raise CorruptWeightsError(f"{path}: implausible header length {header_len}")
            if 8 + header_len > file_size:
                raise CorruptWeightsError(
                    f"{path}: header length {header_len} exceeds the file size {file_size} "
                    "(truncated file?)"
                )
            raw_header = handle.read(header_len)
    except FileNotFoundError:
        raise AdapterNotFoundError(f"weights file not found: {path}") from None
    try:
        header = json.loads(raw_header.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptWeightsError(f"{path}: safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptWeightsError(f"{path}: safetensors header is not a JSON object")

    data_size = file_size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                raise CorruptWeightsError(f"{path}: __metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CorruptWeightsError(
                f"{path}: tensor {name!r} must have exactly dtype, shape and data_offsets"
            )
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPE_SIZES:
            raise CorruptWeightsError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
            raise CorruptWeightsError(f"{path}: tensor {name!r} has invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise CorruptWeightsError(
                f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}"
            )
        begin, end = offsets
        if end > data_size:
            raise CorruptWeightsError(
                f"{path}: tensor {name!r} ends at byte {end}, outside the data area "
                f"({data_size} bytes)"
            )
        numel = 1
        for dim in shape:
            numel *= dim
        expected = numel * SAFETENSORS_DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise CorruptWeightsError(
                f"{path}: tensor {name!r} spans {end - begin} bytes but shape {shape} of "
                f"{dtype} needs {expected}"
            )
        spans.append((begin, end, name))

    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin < position:
            raise CorruptWeightsError(f"{path}: tensor {name!r} overlaps the previous tensor")
        if begin > position:
            raise CorruptWeightsError(
                f"{path}: gap of {begin - position} bytes before tensor {name!r}"
            )
        position = end
    if position != data_size:
        raise CorruptWeightsError(
            f"{path}: tensors cover {position} bytes but the data area holds {data_size}"
        )
    return header


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    validate_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptWeightsError(f"{path}: unreadable safetensors file: {exc}") from None


# ---------------------------------------------------------------------------------------------
# torch pickles
# ---------------------------------------------------------------------------------------------

_STORAGE_CLASSES = {
    f"{prefix}Storage"
    for prefix in (
        "Float",
        "Double",
        "Half",
        "BFloat16",
        "Long",
        "Int",
        "Short",
        "Char",
        "Byte",
        "Bool",
        "ComplexFloat",
        "ComplexDouble",
        "Untyped",
    )
}
_DTYPE_NAMES = {
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int8",
    "uint8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "float8_e4m3fn",
    "float8_e5m2",
    "uint16",
    "uint32",
    "uint64",
}

# Every (module, name) a tensor state dict may import while being unpickled.
ALLOWED_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Tensor"),
        ("torch", "Size"),
        ("torch", "strided"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
    }
    | {("torch", name) for name in _STORAGE_CLASSES}
    | {("torch", name) for name in _DTYPE_NAMES}
)

# Opcodes that fetch callables from outside the pickle (the copyreg extension registry).
_FORBIDDEN_OPCODES = {"EXT1", "EXT2", "EXT4"}
_STRING_PUSH_OPCODES = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
_GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
_UNKNOWN = object()
_TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError)

# Cap on the pickle part of a .bin (tensor data is stored separately; the pickle is small).
_MAX_PICKLE_BYTES = 256 * 1024 * 1024


def _check_global(module: str, name: str, where: str) -> None:
    if (module, name) not in ALLOWED_PICKLE_GLOBALS:
        raise UnsafeWeightsError(
            f"{where}: refusing to load: the pickle imports {module}.{name}, which is not a "
            "tensor-rebuild function (only plain tensor state dicts are accepted)"
        )


def scan_pickle(stream: io.BufferedIOBase | io.BytesIO, where: str = "pickle") -> int:
    """Statically check one pickle in ``stream`` (read from its current position).

    Every GLOBAL, STACK_GLOBAL and INST must name an allowed torch rebuild function, storage
    class or dtype; OBJ/REDUCE/NEWOBJ can only call what those pushed. Returns the stream
    position after the STOP opcode. Raises UnsafeWeightsError or CorruptWeightsError.
    """
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed by the immediately preceding string / memo-get ops
    end = -1
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            name = opcode.name
            if name in _FORBIDDEN_OPCODES:
                raise UnsafeWeightsError(f"{where}: refusing opcode {name} (extension registry)")
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _check_global(module, attr, where)
                recent = []
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                    raise UnsafeWeightsError(
                        f"{where}: refusing STACK_GLOBAL whose target cannot be resolved statically"
                    )
                _check_global(recent[-2], recent[-1], where)
                recent = []
            elif name in _STRING_PUSH_OPCODES:
                value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                recent.append(value)
            elif name in _GET_OPCODES:
                recent.append(memo.get(arg, _UNKNOWN))
            elif name in _PUT_OPCODES:
                memo[arg] = recent[-1] if recent else _UNKNOWN
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else _UNKNOWN
            elif name == "STOP":
                end = pos + 1
                break
            else:
                recent = []
    except ValueError as exc:
        raise CorruptWeightsError(f"{where}: malformed pickle: {exc}") from None
    if end < 0:
        raise CorruptWeightsError(f"{where}: truncated pickle (no STOP opcode)")
    return end


def _scan_torch_zip(path: Path) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptWeightsError(f"{path}: unreadable torch zip archive: {exc}") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith(".pkl")]
        data_pickles = [n for n in pickles if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names):
            raise UnsafeWeightsError(f"{path}: TorchScript archives are not weights files")
        if len(data_pickles) != 1 or len(pickles) != 1:
            raise CorruptWeightsError(
                f"{path}: expected exactly one <archive>/data.pkl in the torch archive, "
                f"found {pickles or 'none'}"
            )
        info = archive.getinfo(data_pickles[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise UnsafeWeightsError(f"{path}: data.pkl is {info.file_size} bytes; refusing")
        try:
            data = archive.read(info)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CorruptWeightsError(f"{path}: unreadable data.pkl: {exc}") from None
    stream = io.BytesIO(data)
    end = scan_pickle(stream, where=f"{path}:{data_pickles[0]}")
    if end != len(data):
        raise CorruptWeightsError(f"{path}: trailing bytes after the pickle in data.pkl")


def _scan_legacy_torch_file(path: Path) -> None:
    # Legacy torch.save: magic number, protocol, sys info, the object, storage keys, raw data.
    with path.open("rb") as handle:
        for index in range(5):
            where = f"{path} (legacy pickle {index + 1} of 5)"
            handle.seek(scan_pickle(handle, where=where))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file (``.safetensors`` or torch ``.bin``) after checking it is safe.

    Returns ``{name: tensor}`` on CPU. Raises AdapterNotFoundError (no such file),
    CorruptWeightsError (truncated or malformed) or UnsafeWeightsError (a pickle that would
    import anything but torch's tensor-rebuild functions).
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _read_torch_pickle(path)
    return state


def _read_torch_pickle(path: Path) -> dict[str, torch.Tensor]:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK"):
        _scan_torch_zip(path)
        mmap = True
    elif magic[:1] == b"\x80":
        _scan_legacy_torch_file(path)
        mmap = False  # torch can only mmap the zip format
    else:
        raise CorruptWeightsError(
            f"{path}: not a torch weights file (neither a torch zip archive nor a pickle; "
            "tar archives of torch < 0.4 are not supported)"
        )
    try:
        state = torch.load(str(path), weights_only=True, mmap=mmap, map_location="cpu")
    except _TORCH_LOAD_ERRORS as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Unsupported")), None)
        if detail and "global" in detail:
            raise UnsafeWeightsError(f"{path}: torch refused to load it: {detail}") from None
        message = detail or (lines[0] if lines else type(exc).__name__)
        raise CorruptWeightsError(f"{path}: unreadable torch weights: {message}") from None
    return _check_state_dict(state, path)


def _check_state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise CorruptWeightsError(
            f"{path}: expected a dict of tensors, found {type(state).__name__}"
        )
    result: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CorruptWeightsError(
                f"{path}: expected a dict of str -> tensor, found {key!r}: {type(value).__name__}"
            )
        result[key] = value.detach() if isinstance(value, torch.nn.Parameter) else value
    return result
