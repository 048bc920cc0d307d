"""The base-model cache: models validators fetch on first use from a Hugging-Face-compatible
endpoint (HUB_BASE_MODEL_ENDPOINT) into a persistent folder (HUB_BASE_MODEL_CACHE_DIR), so that a
fresh install validates uploads for the catalogue's base models with no manual step.

What is fetched: only models the allow-list names (HUB_BASE_MODEL_ALLOW, fnmatch patterns; the
default is the catalogue's base models, `DEFAULT_ALLOW`), and of them only safetensors weights and
config/tokenizer files known by name, each within its byte cap. Pickle weights (.bin, .pt, .ckpt)
are never fetched: a model that has nothing else is refused, and says so.

How: the model info (`GET /api/models/<id>`: commit sha and file list), then every file at that
sha (`GET /<id>/resolve/<sha>/<file>`, checked against the sha256 the info or the ETag gives), into
a staging folder renamed into place once complete, under an exclusive lock per model (flock) so
two worker processes never fetch the same model twice or see half of one. A fetch cut short (the
endpoint, or the validation's time limit) is resumed by the next one with a Range request.

Bounded: past HUB_BASE_MODEL_CACHE_MAX_BYTES the least recently used model folders are removed,
never one in use (a process loading it holds the same lock shared) nor one being written.
An endpoint that does not answer (or answers 5xx/429) raises BaseModelFetchDelayed: the upload is
given back and validated again later, not rejected for a fault of this hub.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings

log = logging.getLogger(__name__)

# The base models of the catalogue: every `model_name` of the Hub repository's cards
# (../shared/hub-snapshot, tests/uploads/test_basemodel_cache.py holds this list to it), with the
# ids the Hugging Face Hub moved them to, and the demo's MiniLM.
DEFAULT_ALLOW = (
    "bert-base-uncased",
    "bert-base-multilingual-cased",
    "bert-base-multilingual-uncased",
    "google-bert/bert-base-uncased",
    "google-bert/bert-base-multilingual-cased",
    "google-bert/bert-base-multilingual-uncased",
    "distilbert-base-uncased",
    "distilbert/distilbert-base-uncased",
    "roberta-base",
    "roberta-large",
    "FacebookAI/roberta-base",
    "FacebookAI/roberta-large",
    "xlm-roberta-base",
    "xlm-roberta-large",
    "FacebookAI/xlm-roberta-base",
    "FacebookAI/xlm-roberta-large",
    "gpt2",
    "openai-community/gpt2",
    "facebook/bart-base",
    "facebook/bart-large",
    "facebook/mbart-large-cc25",
    "aubmindlab/bert-base-arabert",
    "sentence-transformers/all-MiniLM-L6-v2",
)
# Files fetched besides the weights, by exact name at the model's top level.
CONFIG_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "sentencepiece.bpe.model",
        "spiece.model",
        "tokenizer.model",
    }
)
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".msgpack")
# A config or tokenizer file larger than this is not what it claims to be.
CONFIG_FILE_MAX_BYTES = 64 * 1024**2
MANIFEST = ".hub-model.json"
LAST_USED = ".last-used"
# A worker (no progress bar) logs how far a file's download got this often.
PROGRESS_LOG_SECONDS = 10
# Partial files of an interrupted fetch are kept this long for the next fetch to resume.
STALE_STAGING_SECONDS = 24 * 3600
HTTP_TIMEOUT = (10, 60)  # connect, read (seconds between bytes)
CHUNK = 1024**2


class BaseModelUnavailable(Exception):
    """The base model of an upload cannot be loaded by this hub's validators."""


class BaseModelNotAllowed(BaseModelUnavailable):
    """The model is not on this hub's allow-list, so validators do not fetch it."""


class BaseModelFetchDelayed(BaseModelUnavailable):
    """The endpoint could not be reached (or failed): worth trying again later."""


@dataclass
class FilePlan:
    name: str
    size: int | None
    sha256: str | None


@dataclass
class FetchPlan:
    model_id: str
    endpoint: str
    sha: str
    files: list[FilePlan] = field(default_factory=list)

    @property
    def known_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass(frozen=True)
class CachedModel:
    model_id: str
    folder: Path
    bytes: int
    last_used: float
    sha: str
    endpoint: str


# -- settings ------------------------------------------------------------------------------------


def endpoint() -> str:
    return (settings.HUB_BASE_MODEL_ENDPOINT or "").rstrip("/")


def allow_patterns() -> list[str]:
    return list(settings.HUB_BASE_MODEL_ALLOW or DEFAULT_ALLOW)


def is_allowed(model_id: str) -> bool:
    return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in allow_patterns())


def not_allowed_message(model_id: str) -> str:
    custom = bool(settings.HUB_BASE_MODEL_ALLOW)
    which = "HUB_BASE_MODEL_ALLOW" if custom else "the default allow-list (the catalogue's models)"
    return (
        f"base model {model_id} is not allowed on this hub: its validators fetch only base models "
        f"that match {which}. The hub's operator can allow it by adding {model_id} (or a pattern "
        f"such as {model_id.split('/')[0]}/*) to HUB_BASE_MODEL_ALLOW, or register a local folder "
        "for it in HUB_BASE_MODELS"
    )


def cache_dir() -> Path:
    configured = settings.HUB_BASE_MODEL_CACHE_DIR
    return Path(configured) if configured else Path(settings.HUB_DATA_DIR) / "base-models"


def folder_name(model_id: str) -> str:
    # Hub ids never hold '--' (basemodels.is_hub_id), so org--name is one folder per id.
    return model_id.replace("/", "--")


def model_folder(model_id: str) -> Path:
    return cache_dir() / folder_name(model_id)


def cached_folder(model_id: str) -> Path | None:
    """The complete cached folder of the model, or None (a folder is complete once renamed into
    place with its manifest)."""
    folder = model_folder(model_id)
    return folder if (folder / MANIFEST).is_file() else None


def touch(folder: Path) -> None:
    try:
        (folder / LAST_USED).touch()
    except OSError:  # a read-only cache still serves
        pass


# -- locks ---------------------------------------------------------------------------------------


@contextmanager
def model_lock(model_id: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """flock on the model's lock file: exclusive to fetch or remove it, shared to read it. Yields
    False when not blocking and another process holds it."""
    locks = cache_dir() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{folder_name(model_id)}.lock", "a+b") as handle:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle.fileno(), mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- fetch ---------------------------------------------------------------------------------------


def ensure_model(model_id: str, *, progress: bool = False) -> Path:
    """The cached folder of the model, fetched first if needed (allow-list, endpoint, caps)."""
    return fetch_model(model_id, progress=progress)[0]


def fetch_model(model_id: str, *, progress: bool = False) -> tuple[Path, bool]:
    """(the cached folder of the model, whether this call fetched it)."""
    folder = cached_folder(model_id)
    if folder is not None:
        touch(folder)
        return folder, False
    source = endpoint()
    if not source:
        raise BaseModelUnavailable(
            f"base model {model_id} is not available to this hub's validators: it is not in "
            "HUB_BASE_MODELS, not cached, and HUB_BASE_MODEL_ENDPOINT is empty (never fetch)"
        )
    if not is_allowed(model_id):
        raise BaseModelNotAllowed(not_allowed_message(model_id))
    with model_lock(model_id):
        folder = cached_folder(model_id)
        if folder is not None:  # another process fetched it while this one waited
            touch(folder)
            return folder, False
        plan = plan_fetch(model_id, source)
        bound = settings.HUB_BASE_MODEL_CACHE_MAX_BYTES
        if plan.known_bytes > bound:
            raise BaseModelUnavailable(
                f"base model {model_id} on {source} is {plan.known_bytes} bytes, more than the "
                f"whole base-model cache may hold (HUB_BASE_MODEL_CACHE_MAX_BYTES={bound})"
            )
        evict(reserve=plan.known_bytes, keep={model_id})
        folder = install(plan, progress=progress)
    evict(keep={model_id})
    return folder, True


def _get(
    url: str,
    model_id: str,
    source: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT, stream=stream, headers=headers)
    except requests.RequestException as exc:
        raise BaseModelFetchDelayed(
            f"base model {model_id} could not be fetched from {source}: the endpoint did not "
            f"answer ({type(exc).__name__})"
        ) from None
    if response.status_code >= 500 or response.status_code == 429:
        response.close()
        raise BaseModelFetchDelayed(
            f"base model {model_id} could not be fetched from {source}: the endpoint answered "
            f"HTTP {response.status_code}"
        )
    if response.status_code in (401, 403, 404):
        code = response.headers.get("X-Error-Code") or f"HTTP {response.status_code}"
        response.close()
        raise BaseModelUnavailable(
            f"base model {model_id} was not found on {source} ({code}): check model_name in "
            "adapter_config.json (gated and private models cannot be fetched)"
        )
    if response.status_code not in (200, 206):
        response.close()
        raise BaseModelUnavailable(
            f"base model {model_id}: {source} answered HTTP {response.status_code} for {url}"
        )
    return response


def plan_fetch(model_id: str, source: str) -> FetchPlan:
    """Which files of the model to fetch, at which commit: safetensors weights and the config
    and tokenizer files; refused when the only weights are pickles."""
    response = _get(f"{source}/api/models/{model_id}?blobs=true", model_id, source)
    try:
        info = response.json()
        sha = str(info["sha"])
        siblings = {str(s["rfilename"]): s for s in info.get("siblings") or []}
    except (ValueError, KeyError, TypeError):
        raise BaseModelUnavailable(
            f"base model {model_id}: {source} did not answer with model info (sha and files)"
        ) from None
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise BaseModelUnavailable(f"base model {model_id}: {source} gave no commit sha")
    plan = FetchPlan(model_id=model_id, endpoint=source, sha=sha)

    def add(name: str) -> None:
        sibling = siblings[name]
        lfs = sibling.get("lfs") or {}
        size = sibling.get("size", lfs.get("size"))
        plan.files.append(
            FilePlan(name, int(size) if size is not None else None, lfs.get("sha256"))
        )

    if "config.json" not in siblings:
        raise BaseModelUnavailable(f"base model {model_id} on {source} has no config.json")
    for name in sorted(CONFIG_FILES & siblings.keys()):
        add(name)
    if SAFETENSORS in siblings:
        add(SAFETENSORS)
    elif SAFETENSORS_INDEX in siblings:
        add(SAFETENSORS_INDEX)
        for name in sorted(n for n in siblings if SHARD_RE.match(n)):
            add(name)
    else:
        pickles = sorted(n for n in siblings if "/" not in n and n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise BaseModelUnavailable(
                f"base model {model_id} on {source} has only pickle weights ({', '.join(pickles)}): "
                "this hub never fetches or unpickles pickle files. Its owner can add "
                "model.safetensors, or the hub's operator can convert it and register the folder "
                "in HUB_BASE_MODELS"
            )
        raise BaseModelUnavailable(
            f"base model {model_id} on {source} has no weights (no model.safetensors)"
        )
    return plan


def staging_folder(model_id: str) -> Path:
    """Where a fetch of the model writes (one at a time: the model's lock is held). What an
    interrupted fetch left there is resumed by the next one, at the same sha."""
    return cache_dir() / f".tmp-{folder_name(model_id)}"


def install(plan: FetchPlan, *, progress: bool = False) -> Path:
    """Fetch every planned file into the staging folder, then rename it into place. A fetch cut
    short by the endpoint or by the validation's time limit leaves its files for the next one to
    resume; any other failure removes them."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = model_folder(plan.model_id)
    tmp = staging_folder(plan.model_id)
    marker = tmp / ".sha"
    if tmp.exists() and (not marker.is_file() or marker.read_text() != plan.sha):
        shutil.rmtree(tmp)  # partial files of another revision
    tmp.mkdir(exist_ok=True)
    marker.write_text(plan.sha)
    started = time.monotonic()
    try:
        total = 0
        for item in plan.files:
            total += fetch_file(plan, item, tmp, total, progress=progress)
        if SAFETENSORS_INDEX in {f.name for f in plan.files}:
            _check_shards(plan, tmp)
        manifest = {
            "id": plan.model_id,
            "endpoint": plan.endpoint,
            "sha": plan.sha,
            "files": {f.name: (tmp / f.name).stat().st_size for f in plan.files},
            "bytes": total,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        marker.unlink()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (tmp / LAST_USED).touch()
        if target.exists():  # left by hand, without a manifest: not ours to trust
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException as exc:
        if not (isinstance(exc, BaseModelFetchDelayed) or _out_of_time(exc)):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "base model %s fetched from %s at %s: %d files, %d bytes in %.1f s",
        plan.model_id,
        plan.endpoint,
        plan.sha[:12],
        len(plan.files),
        total,
        time.monotonic() - started,
    )
    return target


def _out_of_time(exc: BaseException) -> bool:
    """Celery's soft time limit of the validation task, raised inside the fetch."""
    return type(exc).__name__ == "SoftTimeLimitExceeded"


def _cap(plan: FetchPlan, item: FilePlan, so_far: int) -> int:
    total_cap = settings.HUB_BASE_MODEL_MAX_BYTES
    left = total_cap - so_far
    return min(left, CONFIG_FILE_MAX_BYTES) if item.name in CONFIG_FILES else left


def fetch_file(
    plan: FetchPlan, item: FilePlan, folder: Path, so_far: int, *, progress: bool
) -> int:
    """One file, streamed to disk with its sha256 checked; its size."""
    from tqdm import tqdm

    cap = _cap(plan, item, so_far)
    what = f"base model {plan.model_id}: {item.name}"
    if item.size is not None and item.size > cap:
        raise BaseModelUnavailable(
            f"{what} is {item.size} bytes, over its cap of {cap} {_cap_name(item)}"
        )
    url = f"{plan.endpoint}/{plan.model_id}/resolve/{plan.sha}/{quote(item.name)}"
    path = folder / item.name
    digest = hashlib.sha256()
    have = path.stat().st_size if path.is_file() and item.size is not None else 0
    if have > (item.size or 0):
        have = 0
    if have:  # resume: hash what an earlier fetch wrote, ask for the rest
        with open(path, "rb") as done:
            for chunk in iter(lambda: done.read(CHUNK), b""):
                digest.update(chunk)
    written = have
    if have == item.size and have:
        log.info("%s: complete from an earlier fetch", what)
        expected = item.sha256
    else:
        log.info(
            "fetching %s (%s bytes%s) from %s",
            what,
            item.size if item.size is not None else "?",
            f", resuming at {have}" if have else "",
            plan.endpoint,
        )
        headers = {"Range": f"bytes={have}-"} if have else {}
        with _get(url, plan.model_id, plan.endpoint, stream=True, headers=headers) as response:
            expected = item.sha256 or _etag_sha256(response)
            if have and response.status_code != 206:  # the endpoint sent it all again
                digest, written, have = hashlib.sha256(), 0, 0
            bar = tqdm(
                total=item.size,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=f"{plan.model_id}/{item.name}",
                disable=not progress,
                leave=False,
            )
            logged = time.monotonic()
            try:
                with open(path, "ab" if have else "wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        written += len(chunk)
                        if written > cap:
                            raise BaseModelUnavailable(
                                f"{what} is larger than its cap of {cap} bytes {_cap_name(item)}"
                            )
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
                        if not progress and time.monotonic() - logged > PROGRESS_LOG_SECONDS:
                            logged = time.monotonic()
                            log.info("%s: %d of %s bytes", what, written, item.size or "?")
            except requests.RequestException as exc:
                raise BaseModelFetchDelayed(
                    f"{what}: the transfer from {plan.endpoint} broke off ({type(exc).__name__})"
                ) from None
            finally:
                bar.close()
    if item.size is not None and written != item.size:
        raise BaseModelFetchDelayed(
            f"{what}: {written} bytes arrived of {item.size} from {plan.endpoint}"
        )
    if expected and digest.hexdigest() != expected:
        path.unlink()
        raise BaseModelUnavailable(
            f"{what}: the bytes from {plan.endpoint} do not match their sha256 {expected}"
        )
    return written


def _cap_name(item: FilePlan) -> str:
    if item.name in CONFIG_FILES:
        return "(a config or tokenizer file; the model may hold HUB_BASE_MODEL_MAX_BYTES)"
    return "(HUB_BASE_MODEL_MAX_BYTES, the model's files together)"


def _etag_sha256(response: requests.Response) -> str | None:
    etag = (response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or "").strip()
    etag = etag.removeprefix("W/").strip('"')
    return etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None


def _check_shards(plan: FetchPlan, folder: Path) -> None:
    try:
        weight_map = json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"]
        shards = set(weight_map.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BaseModelUnavailable(
            f"base model {plan.model_id}: {SAFETENSORS_INDEX} has no weight_map"
        ) from None
    missing = sorted(s for s in shards if not (folder / str(s)).is_file())
    if missing:
        raise BaseModelUnavailable(
            f"base model {plan.model_id}: {SAFETENSORS_INDEX} names shards the endpoint does not "
            f"list: {missing[:5]}"
        )


# -- the cache's contents and its bound ----------------------------------------------------------


def cached_models() -> list[CachedModel]:
    root = cache_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not (folder / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            last = (folder / LAST_USED).stat().st_mtime if (folder / LAST_USED).exists() else 0.0
        except (OSError, ValueError):
            continue
        found.append(
            CachedModel(
                model_id=str(manifest.get("id")),
                folder=folder,
                bytes=int(manifest.get("bytes") or 0),
                last_used=last,
                sha=str(manifest.get("sha") or ""),
                endpoint=str(manifest.get("endpoint") or ""),
            )
        )
    return found


def evict(*, reserve: int = 0, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Remove the least recently used model folders until the cache plus `reserve` bytes fits
    HUB_BASE_MODEL_CACHE_MAX_BYTES; never a model in `keep`, in use or being written (its lock is
    held). Also removes temporary folders that no fetch holds any more. Returns the removed ids."""
    _remove_stale_temporaries()
    bound = settings.HUB_BASE_MODEL_CACHE_MAX_BYTES
    models = sorted(cached_models(), key=lambda m: m.last_used)
    total = sum(m.bytes for m in models)
    removed = []
    for model in models:
        if total + reserve <= bound:
            break
        if model.model_id in keep:
            continue
        with model_lock(model.model_id, blocking=False) as free:
            if not free:
                log.info("base model %s is in use: not evicted", model.model_id)
                continue
            trash = model.folder.with_name(f".trash-{model.folder.name}-{uuid.uuid4().hex[:8]}")
            os.rename(model.folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
        total -= model.bytes
        removed.append(model.model_id)
        log.info(
            "base model %s evicted (%d bytes; cache bound %d)", model.model_id, model.bytes, bound
        )
    if total + reserve > bound:
        log.warning(
            "base-model cache holds %d bytes (+%d being fetched), over its bound %d: the rest is in use",
            total,
            reserve,
            bound,
        )
    return removed


def _remove_stale_temporaries() -> None:
    """Trash of evictions, and staging folders no fetch has touched for STALE_STAGING_SECONDS
    (an interrupted fetch is resumed before that; after it the partial files only take room)."""
    root = cache_dir()
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(".trash-"):
            shutil.rmtree(path, ignore_errors=True)
            continue
        if not path.name.startswith(".tmp-"):
            continue
        model_id = path.name.removeprefix(".tmp-").replace("--", "/")
        with model_lock(model_id, blocking=False) as free:
            if free and time.time() - _newest_mtime(path) > STALE_STAGING_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


def _newest_mtime(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
    except OSError:
        return 0.0


@contextmanager
def using(model_id: str) -> Iterator[Path]:
    """The cached folder of the model, held (shared lock) so that no eviction removes it while
    the caller reads it; fetched again if it was evicted in between."""
    for _ in range(3):
        ensure_model(model_id)
        with model_lock(model_id, shared=True):
            folder = cached_folder(model_id)
            if folder is not None:
                touch(folder)
                yield folder
                return
    raise BaseModelUnavailable(f"base model {model_id} was evicted each time it was fetched")
