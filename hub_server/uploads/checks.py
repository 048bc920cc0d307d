"""The checks an upload passes before anyone can download it, in order. Each is a named function
that returns what it found or raises CheckFailed with a message that says what is wrong and what
to change (warehouse's forklift style). They share a `Validation` that carries what earlier checks
learned (the extracted folder, the configs, the base model, the loaded model).

`run_checks` runs them in order, stops at the first failure and returns the report: one entry
(name, ok, message, duration_ms) per check, the checks not reached marked skipped (ok None). A
check that cannot run for a fault of this hub raises ValidationDelayed through it instead.
"""

from __future__ import annotations

import logging
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from hub_server.catalog import hubformat
from hub_server.catalog.hosting import CONFIG_FILES
from hub_server.catalog.models import Adapter, AdapterType, Subtask, Task
from hub_server.catalog.safe_yaml import clip
from hub_server.uploads import basemodels
from hub_server.uploads.publishing import (
    NAME_RE,
    VERSION_RE,
    PublishError,
    default_name,
    download_path,
    match_architecture,
)

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
HEAD_CONFIG = "head_config.json"
FUSION_CONFIG = "adapter_fusion_config.json"
# Only for tests of a worker killed mid-validation: seconds the load check sleeps.
TEST_DELAY_ENV = "HUB_VALIDATION_TEST_DELAY"
CARD_TEXT_FIELDS = ("author", "email", "url", "github", "twitter", "citation", "description")


class CheckFailed(Exception):
    """An upload fails a check; the message is shown to the contributor as it is."""


class ValidationDelayed(Exception):
    """A check cannot run now for a fault of this hub (the base-model endpoint is down): the
    upload is validated again later, not rejected."""


@dataclass
class Validation:
    """One upload under validation: its inputs, and what each check found for the next."""

    archive_path: Path
    workdir: Path
    type: str
    task: str
    subtask: str
    org: str
    name: str | None = None
    version: str | None = None
    card_extra: dict[str, Any] = field(default_factory=dict)
    # Filled in by the checks:
    folder: Path | None = None
    files: list[str] = field(default_factory=list)
    adapter_config: dict[str, Any] = field(default_factory=dict)
    head_config: dict[str, Any] | None = None
    card_yaml: str = ""
    base: basemodels.BaseModelSource | None = None
    model: Any = None
    adapter_name: str = ""
    peft_type: str = ""  # a PEFT folder (converted by check_peft)

    @property
    def model_name(self) -> str:
        return str(self.card_extra.get("model_name") or self.adapter_config.get("model_name") or "")


def allowed_file_names() -> set[str]:
    from adapters_core import loading

    return set(CONFIG_FILES) | {n for pair in loading.WEIGHTS_NAMES.values() for n in pair}


# -- 1. archive ----------------------------------------------------------------------------------


def check_archive(v: Validation) -> str:
    """A zip of one adapter folder: no absolute or `..` paths, no links, within the caps, only the
    file names of an adapter folder."""
    from adapters_core import UnsafeArchiveError
    from adapters_core.hub import ExtractionLimits, safe_extract_zip

    with open(v.archive_path, "rb") as fh:
        magic = fh.read(4)
    if not zipfile.is_zipfile(v.archive_path):
        kind = "gzip/tar.gz" if magic[:2] == b"\x1f\x8b" else "not a zip file"
        raise CheckFailed(f"the upload must be a zip archive of the adapter folder ({kind})")
    limits = ExtractionLimits(
        max_files=settings.HUB_UPLOAD_MAX_FILES,
        max_total_bytes=settings.HUB_UPLOAD_MAX_UNCOMPRESSED_BYTES,
        max_ratio=settings.HUB_UPLOAD_MAX_RATIO,
    )
    folder = v.workdir / "adapter"
    try:
        safe_extract_zip(v.archive_path, folder, limits)
    except UnsafeArchiveError as exc:
        raise CheckFailed(f"unsafe archive: {exc}") from None
    except zipfile.BadZipFile as exc:
        raise CheckFailed(f"the zip archive is damaged: {exc}") from None
    entries = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    peft = "adapter_model.safetensors" in entries or "adapter_model.bin" in entries
    if peft:
        v.peft_type = _peft_type(folder)
    allowed = PEFT_FILES if peft else allowed_file_names()
    unknown = [clip(e, 80) for e in entries if e not in allowed]
    if unknown:
        raise CheckFailed(
            f"unknown file(s) in the archive: {clip(str(unknown), 300)}; an adapter archive holds "
            f"only the files save_adapter writes ({sorted(allowed)}), at its top level"
        )
    if ADAPTER_CONFIG not in entries:
        raise CheckFailed(f"the archive has no {ADAPTER_CONFIG}: is it a save_adapter folder?")
    cap = settings.HUB_UPLOAD_MAX_JSON_BYTES
    for name in entries:
        size = (folder / name).stat().st_size
        if name.endswith(".json") and size > cap:
            raise CheckFailed(
                f"{name} is {size} bytes; a JSON file of an upload may be at most {cap} bytes "
                "(HUB_UPLOAD_MAX_JSON_BYTES)"
            )
    v.folder, v.files = folder, entries
    total = sum((folder / e).stat().st_size for e in entries)
    return f"{len(entries)} files, {total} bytes: {', '.join(entries)}"


# -- 2. PEFT ------------------------------------------------------------------------------------

PEFT_FILES = {ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin", "README.md"}


def _peft_type(folder: Path) -> str:
    from adapters_core import AdapterError, loading

    try:
        config = loading.read_json_config(folder / ADAPTER_CONFIG)
    except (AdapterError, ValueError, OSError):
        config = None
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if not isinstance(peft_type, str) or not peft_type:
        raise CheckFailed(
            f"adapter_model.* is PEFT's weights file, but {ADAPTER_CONFIG} has no peft_type: "
            "upload the folder PeftModel.save_pretrained wrote, or a save_adapter folder"
        )
    return peft_type


def check_peft(v: Validation) -> str:
    """A PEFT folder (PeftModel.save_pretrained / push_to_hub) is read by adapters_core's PEFT
    reader into its base model, which checks that every module and shape fits, and saved as an
    adapters folder: the later checks and publishing see that folder. Others pass unchanged."""
    from adapters_core import AdapterError

    if not v.peft_type:
        return "not a PEFT folder: nothing to convert"
    peft_config = _read_json(v, ADAPTER_CONFIG)
    model_name = str(
        v.card_extra.get("model_name") or peft_config.get("base_model_name_or_path") or ""
    )
    if not model_name:
        raise CheckFailed(
            f"the PEFT {ADAPTER_CONFIG} has no base_model_name_or_path: give the base model "
            "(model_name)"
        )
    if not basemodels.is_hub_id(model_name):
        raise CheckFailed(f"base_model_name_or_path {basemodels.not_a_hub_id(model_name)}")
    try:
        base = basemodels.resolve_base_model(model_name)
    except basemodels.BaseModelFetchDelayed as exc:
        raise ValidationDelayed(str(exc)) from None
    except SoftTimeLimitExceeded:
        # as check_config: what arrived stays, the next attempt resumes the fetch
        raise ValidationDelayed(
            f"base model {model_name} was still being fetched from "
            f"{settings.HUB_BASE_MODEL_ENDPOINT} when the validation time limit "
            f"(HUB_VALIDATION_TIME_LIMIT) ran out; the fetch resumes at the next attempt"
        ) from None
    except basemodels.BaseModelUnavailable as exc:
        raise CheckFailed(str(exc)) from None
    try:
        model = basemodels.load_base_model(base)
    except Exception as exc:
        raise CheckFailed(f"base model {model_name} could not be loaded: {exc}") from None
    peft_folder = v.folder
    (peft_folder / "README.md").unlink(missing_ok=True)  # PEFT's card; the hub writes its own
    try:
        name = model.load_adapter(str(peft_folder), load_as="adapter")
    except AdapterError as exc:
        raise CheckFailed(
            f"the PEFT {v.peft_type} adapter cannot be read: {_local(exc, v)}"
        ) from None
    model.config._name_or_path = model_name  # saved as the adapter's model_name
    converted = v.workdir / "converted"
    model.save_adapter(str(converted), name, with_head=False)
    v.folder = converted
    v.files = sorted(p.name for p in converted.iterdir())
    config = model.adapters_config.adapters[name]
    return (
        f"PEFT {v.peft_type} adapter for {model_name} read as a {config.variant} adapter "
        f"(r={config.r}, alpha={config.alpha}) and converted to the adapters format"
    )


# -- 3. card -------------------------------------------------------------------------------------


def _read_json(v: Validation, name: str) -> dict[str, Any]:
    from adapters_core import AdapterError, loading

    try:
        data = loading.read_json_config(v.folder / name)
    except (AdapterError, ValueError, OSError) as exc:
        raise CheckFailed(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckFailed(f"{name} must hold a JSON object")
    return data


def card_data(v: Validation, architecture: str, overrides: dict, sha256: str) -> dict[str, Any]:
    """The Hub card this upload will become (what publishing renders afterwards, same fields)."""
    cfg = v.adapter_config
    card: dict[str, Any] = {
        "type": v.type,
        "task": v.task,
        "subtask": v.subtask,
        "model_type": cfg.get("model_type"),
        "model_name": v.model_name,
    }
    if v.card_extra.get("model_class") or cfg.get("model_class"):
        card["model_class"] = v.card_extra.get("model_class") or cfg.get("model_class")
    card["prediction_head"] = HEAD_CONFIG in v.files
    card["config"] = {"using": architecture, **overrides}
    if cfg.get("hidden_size"):
        card["hidden_size"] = cfg["hidden_size"]
    for key in CARD_TEXT_FIELDS:
        if v.card_extra.get(key):
            card[key] = str(v.card_extra[key])
    card.setdefault("author", v.org)
    version = v.version or "1"
    card["default_version"] = version
    card["files"] = [
        {"version": version, "url": download_path(v.org, v.name or "x", version), "sha256": sha256}
    ]
    return card


def check_card(v: Validation) -> str:
    """The card (task, subtask, type, org, name, version, author fields, the adapter config) is a
    valid Hub-format adapter card whose references exist in the catalogue."""
    from hub_server.storage import hash_file

    v.adapter_config = _read_json(v, ADAPTER_CONFIG)
    if HEAD_CONFIG in v.files:
        v.head_config = _read_json(v, HEAD_CONFIG)
    if not NAME_RE.match(v.org or ""):
        raise CheckFailed(f"org {v.org!r} is not a valid organisation name")
    if v.version is not None and not VERSION_RE.match(str(v.version)):
        raise CheckFailed(f"version {v.version!r} must be letters, digits, '.', '_' or '-'")
    if not v.model_name:
        raise CheckFailed(f"{ADAPTER_CONFIG} has no model_name: say which base model it is for")
    if not basemodels.is_hub_id(v.model_name):
        raise CheckFailed(f"model_name {basemodels.not_a_hub_id(v.model_name)}")
    if not v.adapter_config.get("model_type"):
        raise CheckFailed(f"{ADAPTER_CONFIG} has no model_type")
    if not AdapterType.objects.filter(id=v.type).exists():
        known = sorted(AdapterType.objects.values_list("id", flat=True))
        raise CheckFailed(f"unknown adapter type {v.type!r}; known types: {known}")
    task = Task.objects.filter(type_id=v.type, task=v.task).first()
    if task is None:
        known = sorted(Task.objects.filter(type_id=v.type).values_list("task", flat=True))
        raise CheckFailed(
            f"unknown task {v.task!r} for type {v.type!r}; known tasks: {known}. A new task is "
            f"added to the Hub repository first (tasks/{v.type}/<task>.yaml)"
        )
    subtask = Subtask.objects.filter(task=task, subtask=v.subtask).first()
    if subtask is None:
        known = sorted(task.subtasks.values_list("subtask", flat=True))
        raise CheckFailed(
            f"unknown subtask {v.subtask!r} of task {v.task!r}; known subtasks: {known}"
        )
    try:
        architecture, overrides = match_architecture(v.adapter_config.get("config"))
    except PublishError as exc:
        raise CheckFailed(str(exc)) from None
    v.name = v.name or default_name(v.model_name, v.task, v.subtask, architecture.name)
    if not NAME_RE.match(v.name):
        raise CheckFailed(
            f"name {v.name!r} must start with a letter or digit and contain only letters, "
            "digits, '.', '_', '+' or '-'"
        )
    card = card_data(v, architecture.name, overrides, hash_file(v.archive_path).sha256)
    v.card_yaml = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    parsed = hubformat.parse_file(f"adapters/{v.org}/{v.name}.yaml", v.card_yaml.encode())
    if parsed.errors:
        raise CheckFailed("the card is not valid: " + "; ".join(str(e) for e in parsed.errors))
    existing = Adapter.objects.filter(org=v.org, name=v.name).first()
    if existing is not None and (
        (existing.type_id, existing.task_id, existing.subtask_id) != (v.type, task.pk, subtask.pk)
        or existing.model_name != v.model_name
    ):
        raise CheckFailed(
            f"@{v.org}/{v.name} already exists for {existing.identifier} on "
            f"{existing.model_name}; a new version must keep task, subtask and base model (or "
            "choose another --name)"
        )
    config_hash = hubformat.config_hash(hubformat.full_config(architecture.config, overrides))
    clash = (
        Adapter.objects.exclude(status=Adapter.Status.WITHDRAWN)
        .exclude(org=v.org, name=v.name)
        .filter(
            org=v.org,
            type_id=v.type,
            task=task,
            subtask=subtask,
            model_name=v.model_name,
            config_hash=config_hash,
        )
        .first()
    )
    if clash is not None:
        raise CheckFailed(
            f"duplicate adapter: {clash.unique_id} already is a {architecture.name} adapter of "
            f"{v.model_name} for {v.task}/{v.subtask}@{v.org}; upload a new version of it "
            f"(--name {clash.name}) instead"
        )
    warnings = "; ".join(str(w) for w in parsed.warnings)
    suffix = f" (warnings: {warnings})" if warnings else ""
    action = "new version of" if existing else "new adapter"
    return f"{action} @{v.org}/{v.name}: {v.task}/{v.subtask}@{v.org}, {architecture.name}{suffix}"


# -- 3. config -----------------------------------------------------------------------------------


def check_config(v: Validation) -> str:
    """A known method and a config adapters_core can build, for a base model this hub can load,
    of the model type and size the configs name."""
    from adapters_core import AdapterConfig, AdapterError

    try:
        config = AdapterConfig.load(v.adapter_config["config"])
    except (AdapterError, ValueError, TypeError, KeyError) as exc:
        raise CheckFailed(f"{ADAPTER_CONFIG}: the adapter config cannot be built: {exc}") from None
    try:
        v.base = basemodels.resolve_base_model(v.model_name)
    except basemodels.BaseModelFetchDelayed as exc:
        raise ValidationDelayed(str(exc)) from None
    except SoftTimeLimitExceeded:
        # Out of time while fetching the base model: what arrived stays, the next attempt resumes.
        raise ValidationDelayed(
            f"base model {v.model_name} was still being fetched from "
            f"{settings.HUB_BASE_MODEL_ENDPOINT} when the validation time limit "
            f"(HUB_VALIDATION_TIME_LIMIT) ran out; the fetch resumes at the next attempt"
        ) from None
    except basemodels.BaseModelUnavailable as exc:
        raise CheckFailed(str(exc)) from None
    model_type = v.adapter_config.get("model_type")
    if model_type != v.base.model_type:
        raise CheckFailed(
            f"{ADAPTER_CONFIG} says model_type {model_type!r}, but base model {v.model_name} "
            f"is a {v.base.model_type!r} model"
        )
    for name, data in ((ADAPTER_CONFIG, v.adapter_config), (HEAD_CONFIG, v.head_config)):
        hidden = (data or {}).get("hidden_size")
        if hidden is not None and v.base.hidden_size is not None and hidden != v.base.hidden_size:
            raise CheckFailed(
                f"{name} says hidden_size {hidden}, but base model {v.model_name} has hidden "
                f"size {v.base.hidden_size}: the adapter was trained for another model size"
            )
        if data and data.get("model_type") not in (None, v.base.model_type):
            raise CheckFailed(f"{name} says model_type {data.get('model_type')!r}")
    method = v.adapter_config["config"].get("architecture") or "bottleneck"
    weights = "pretrained weights" if v.base.pretrained else "random weights (config only)"
    return f"{method} ({type(config).__name__}) for {v.model_name} ({v.base.model_type}, {weights})"


# -- 4. weights ----------------------------------------------------------------------------------


def check_weights(v: Validation) -> str:
    """Every weights file is read through the safe path: safetensors from a checked header, .bin
    only after a static pickle scan (a pickle that would run code is rejected, never executed).
    Each config has its weights, each weights file its config, every tensor is finite."""
    import torch

    from adapters_core import CorruptWeightsError, UnsafeWeightsError, loading

    summary = []
    for config_name, kind in CONFIG_FILES.items():
        if kind is None:
            continue
        names = [n for n in loading.WEIGHTS_NAMES[kind] if n in v.files]
        if config_name in v.files and not names:
            raise CheckFailed(
                f"{config_name} has no weights beside it ({' or '.join(loading.WEIGHTS_NAMES[kind])})"
            )
        if names and config_name not in v.files:
            raise CheckFailed(f"{names[0]} has no {config_name} beside it")
        for name in names:
            path = v.folder / name
            try:
                state = loading.read_state_dict(path)
            except UnsafeWeightsError as exc:
                raise CheckFailed(
                    f"{name} is unsafe: unpickling it would run code, so it was rejected "
                    f"without being loaded ({_local(exc, v)})"
                ) from None
            except CorruptWeightsError as exc:
                raise CheckFailed(f"{name} is corrupt or truncated: {_local(exc, v)}") from None
            if not state:
                raise CheckFailed(f"{name} holds no tensors")
            for key, tensor in state.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise CheckFailed(f"{name}: tensor {key} holds NaN or infinite values")
            params = sum(t.numel() for t in state.values())
            summary.append(f"{name}: {len(state)} tensors, {params} values")
    return "; ".join(summary)


def _local(exc: Exception, v: Validation) -> str:
    """An error message without the worker's temp dir in it."""
    return str(exc).replace(f"{v.folder}/", "").replace(str(v.folder), ".")


# -- 5. load -------------------------------------------------------------------------------------


def check_load(v: Validation) -> str:
    """The adapter (and its head, fusion) loads into the base model with no missing or unexpected
    keys and every shape matching."""
    from adapters_core import AdapterError

    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        time.sleep(float(delay))
    try:
        v.model = basemodels.load_base_model(v.base)
    except Exception as exc:
        raise CheckFailed(f"base model {v.model_name} could not be loaded: {exc}") from None
    try:
        v.adapter_name = v.model.load_adapter(str(v.folder), with_head=True)
        loaded = [f"adapter {v.adapter_name!r}"]
        if HEAD_CONFIG in v.files:
            if v.adapter_name not in getattr(v.model, "heads", {}):
                raise CheckFailed(_head_not_loaded(v))
            loaded.append("head")
        if FUSION_CONFIG in v.files:
            fusion = v.model.load_adapter_fusion(str(v.folder), with_head=False)
            loaded.append(f"fusion {fusion!r}")
    except AdapterError as exc:
        raise CheckFailed(_local(exc, v)) from None
    return f"loaded {', '.join(loaded)} into {v.model_name} with no missing or unexpected keys"


def _head_not_loaded(v: Validation) -> str:
    """Why load_adapter skipped the head (it only logs a warning): a static head saved from a
    model class this hub cannot convert, or none at all."""
    model_class = (v.head_config or {}).get("model_class")
    if (v.head_config or {}).get("config") is None:
        why = (
            f"it has no head config, and a static head of model class {clip(str(model_class), 60)!r} "
            "cannot be converted to a prediction head of this hub"
        )
    else:
        why = f"it is for model class {clip(str(model_class), 60)!r}"
    return (
        f"{HEAD_CONFIG} was not loaded: {why}. Save the adapter with its flexible head "
        "(an AdapterModel of adapters or adapters_core), or upload it without the head"
    )


# -- 6. run --------------------------------------------------------------------------------------


def check_run(v: Validation) -> str:
    """A forward pass on a few tokens gives finite outputs, and the adapter changes them."""
    import torch

    vocab = v.base.vocab_size or 100
    ids = (torch.arange(8) * 37 + 5).remainder(vocab).unsqueeze(0)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    model = v.model
    try:
        with torch.no_grad():
            model.set_active_adapters(None)
            plain = model.base_model(**inputs).last_hidden_state
            model.set_active_adapters(v.adapter_name)
            adapted = model.base_model(**inputs).last_hidden_state
            head_out = None
            if v.adapter_name in getattr(model, "heads", {}):
                head_out = model(**inputs, head=v.adapter_name)
    except Exception as exc:
        raise CheckFailed(f"the forward pass failed: {type(exc).__name__}: {exc}") from None
    if not bool(torch.isfinite(adapted).all()):
        raise CheckFailed("the forward pass with the adapter gives NaN or infinite outputs")
    logits = getattr(head_out, "logits", None)
    if logits is not None and not bool(torch.isfinite(logits).all()):
        raise CheckFailed("the prediction head gives NaN or infinite outputs")
    change = float((adapted - plain).abs().max())
    if not math.isfinite(change) or change == 0.0:
        raise CheckFailed(
            "the adapter does not change the model's outputs (all-zero weights, or not wired in)"
        )
    head = f", head output {tuple(logits.shape)}" if logits is not None else ""
    return f"finite outputs on {ids.shape[1]} tokens; the adapter changes them by up to {change:.3g}{head}"


CHECKS: list[tuple[str, Callable[[Validation], str]]] = [
    ("archive", check_archive),
    ("peft", check_peft),
    ("card", check_card),
    ("config", check_config),
    ("weights", check_weights),
    ("load", check_load),
    ("run", check_run),
]
CHECK_NAMES = [name for name, _ in CHECKS] + ["publish"]


def report_entry(name: str, ok: bool | None, message: str, started: float | None) -> dict:
    duration = round((time.perf_counter() - started) * 1000, 1) if started is not None else 0.0
    # Messages quote what the upload holds (file names, tensor keys): never at length.
    return {"name": name, "ok": ok, "message": clip(message, 1000), "duration_ms": duration}


def run_checks(v: Validation) -> tuple[bool, list[dict]]:
    """Run every check in order; (all passed, report). Stops at the first failure."""
    report = []
    for index, (name, check) in enumerate(CHECKS):
        started = time.perf_counter()
        try:
            message = check(v)
        except CheckFailed as exc:
            report.append(report_entry(name, False, str(exc), started))
            report += [skipped(n) for n, _ in CHECKS[index + 1 :]]
            return False, report
        except ValidationDelayed:
            raise
        except Exception as exc:  # a bug or an input no check foresaw: reject, and say so
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                message = (
                    f"validation took longer than HUB_VALIDATION_TIME_LIMIT "
                    f"({settings.HUB_VALIDATION_TIME_LIMIT} s)"
                )
            else:
                log.exception("check %s crashed", name)
                message = f"the check failed unexpectedly: {type(exc).__name__}: {exc}"
            report.append(report_entry(name, False, message, started))
            report += [skipped(n) for n, _ in CHECKS[index + 1 :]]
            return False, report
        report.append(report_entry(name, True, message, started))
    return True, report


def skipped(name: str) -> dict:
    return {
        "name": name,
        "ok": None,
        "message": "not run: an earlier check failed",
        "duration_ms": 0.0,
    }
