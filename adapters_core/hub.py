"""Where adapters come from: identifiers, the legacy AdapterHub index, downloads, cache, extraction.

``resolve_adapter_path`` turns whatever a user passes to ``load_adapter`` into a local folder:

- an existing folder is returned as it is;
- ``http(s)://...`` is downloaded as a zip archive;
- ``@org/file``, ``task/subtask@org``, ``task/subtask``, ``subtask@org`` are looked up in the
  legacy ``dist/v2`` index (hub-format.md, "Identifier resolution");
- ``org/name`` is a repository on a Hugging-Face-compatible endpoint (``HF_ENDPOINT``).

Archives are verified against the index's checksum before extraction, extracted with checks
against path traversal, links and decompression bombs, and cached under their sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from adapters_core.archive import _WINDOWS_DRIVE, ExtractionLimits, safe_extract_zip
from adapters_core.configuration.config_string import parse_config_string
from adapters_core.configuration.hashing import config_hash_candidates
from adapters_core.errors import (
    AdapterConfigError,
    AdapterError,
    AdapterNotFoundError,
    ChecksumMismatchError,
    UnsafeArchiveError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_INDEX_URL",
    "DEFAULT_HF_ENDPOINT",
    "AmbiguousIdentifierError",
    "HubUnavailableError",
    "ExtractionLimits",
    "index_base_url",
    "hf_endpoint",
    "cache_root",
    "parse_identifier",
    "resolve_config_dict",
    "find_in_index",
    "download_archive",
    "safe_extract_zip",
    "pull_from_hub",
    "pull_from_hf",
    "resolve_adapter_path",
]

DEFAULT_INDEX_URL = "https://raw.githubusercontent.com/Adapter-Hub/Hub/master/dist/v2/"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
# (connect, read) seconds for every request this module sends.
HTTP_TIMEOUT = (10, 60)
_CHUNK = 1024 * 1024

# Names `adapters` accepts for the Hub's architectures (architectures.json keys).
ARCHITECTURE_ALIASES = {
    "seq_bn": "pfeiffer",
    "double_seq_bn": "houlsby",
    "seq_bn_inv": "pfeiffer+inv",
    "double_seq_bn_inv": "houlsby+inv",
}


class AmbiguousIdentifierError(AdapterError, ValueError):
    """An identifier matches more than one adapter of the index."""


class HubUnavailableError(AdapterError):
    """A server could not be reached or answered with an error (not a 404)."""


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def index_base_url() -> str:
    """The ``dist/v2/`` base: ADAPTERHUB_INDEX_URL, else ADAPTERHUB_URL + /dist/v2/, else GitHub."""
    explicit = os.environ.get("ADAPTERHUB_INDEX_URL")
    if explicit:
        return explicit.rstrip("/") + "/"
    server = os.environ.get("ADAPTERHUB_URL")
    if server:
        return server.rstrip("/") + "/dist/v2/"
    return DEFAULT_INDEX_URL


def hf_endpoint() -> str:
    """The Hugging-Face-compatible endpoint: HF_ENDPOINT, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ADAPTERS_CORE_CACHE, else ~/.cache/adapters_core."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ADAPTERS_CORE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "adapters_core"


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        own = version("adapterhub-selfhosted")
    except Exception:  # not installed as a distribution
        own = "0"
    return f"adapters_core/{own}; python-requests/{requests.__version__}"


def _session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = _user_agent()
    return session


# ---------------------------------------------------------------------------------------------
# JSON fetching
# ---------------------------------------------------------------------------------------------


def _fetch_json(session: requests.Session, url: str) -> Any | None:
    """GET ``url`` as JSON; None on 404. Network errors raise AdapterError naming the URL."""
    try:
        response = session.get(url, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise HubUnavailableError(f"could not fetch {url}: {exc}") from exc
    with response:
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HubUnavailableError(f"could not fetch {url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise HubUnavailableError(f"{url} did not return valid JSON") from None


# ---------------------------------------------------------------------------------------------
# Identifiers and the index
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubIdentifier:
    """``task/subtask@org`` split in its parts (subtask and org may be None)."""

    task: str
    subtask: str | None
    org: str | None


def parse_identifier(identifier: str) -> HubIdentifier:
    """Split ``<task>/<subtask>@<org>`` (subtask and org optional) as the original client did."""
    spec, _, org = identifier.partition("@")
    parts = spec.split("/")
    if len(parts) > 2 or not parts[0] or (len(parts) == 2 and not parts[1]) or "@" in org:
        raise AdapterNotFoundError(
            f"{identifier!r} is not a folder, a URL or an adapter identifier "
            "(task/subtask@org, task/subtask, subtask@org, @org/name or org/name)"
        )
    return HubIdentifier(parts[0], parts[1] if len(parts) == 2 else None, org or None)


def resolve_config_dict(
    config: str | Mapping[str, Any] | Any,
    base: str,
    session: requests.Session | None = None,
) -> dict[str, Any] | None:
    """The full config dict to hash for ``config``, or None when it names no Hub architecture.

    A dict (or an object with ``to_dict``) is used as it is. A string ``name[key=value, ...]``
    is looked up in ``<base>/architectures.json`` (``seq_bn`` -> pfeiffer, ``double_seq_bn`` ->
    houlsby, ...) and overridden with its arguments.
    """
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if not isinstance(config, str):
        raise AdapterConfigError(f"unsupported config type {type(config).__name__}")
    if "|" in config:
        return None  # unions were never published on the Hub
    # one config-string parser for the whole library (configuration/config_string.py)
    name, overrides = parse_config_string(config)[0]
    architecture = ARCHITECTURE_ALIASES.get(name, name)
    session = session or _session()
    architectures = _fetch_json(session, urljoin(base, "architectures.json"))
    if not isinstance(architectures, dict) or architecture not in architectures:
        logger.warning("config %r is not an AdapterHub architecture; ignoring it", config)
        return None
    full = dict(architectures[architecture])
    full.update(overrides)
    return full


def _index_url(base: str, model_name: str) -> str:
    segments = [quote(part, safe="") for part in model_name.strip("/").split("/") if part]
    return urljoin(base, "index/" + "/".join(segments) + ".json")


def _iter_entries(index: Mapping[str, Any], primary: str, secondary: str | None) -> Iterator[Any]:
    # Two parts: index[task][subtask]. One part: every index[part][*] and every index[*][part].
    for task, subtasks in index.items():
        if not isinstance(subtasks, Mapping):
            continue
        if task == primary:
            if secondary is not None:
                if secondary in subtasks:
                    yield subtasks[secondary]
            else:
                yield from subtasks.values()
        elif secondary is None:
            for subtask, entry in subtasks.items():
                if subtask == primary:
                    yield entry


def _matching_version(config_entry: Mapping[str, Any], org: str | None) -> str | None:
    versions = config_entry.get("versions") or {}
    if org:
        return versions.get(org)
    if len(versions) == 1:
        return next(iter(versions.values()))
    if "default" in config_entry:
        return config_entry["default"]
    raise AmbiguousIdentifierError(
        "Multiple adapters with this name are available for this config."
    )


def find_in_index(
    identifier: str,
    model_name: str,
    config: str | Mapping[str, Any] | Any | None = None,
    strict: bool = False,
    base: str | None = None,
    session: requests.Session | None = None,
) -> str:
    """Return the index path (``adapters/<org>/<file>.json``) that ``identifier`` resolves to.

    Steps 2-4 of hub-format.md "Identifier resolution". Raises AdapterNotFoundError when the
    model has no index or nothing matches, AmbiguousIdentifierError when several entries match.
    """
    base = base or index_base_url()
    session = session or _session()
    parsed = parse_identifier(identifier)
    index_url = _index_url(base, model_name)
    index = _fetch_json(session, index_url)
    if index is None:
        raise AdapterNotFoundError(f"no adapters for model {model_name} on {base}")
    if not isinstance(index, Mapping):
        raise AdapterError(f"{index_url} is not an index (expected a JSON object)")

    entries = list(_iter_entries(index, parsed.task, parsed.subtask))
    if not entries:
        raise AdapterNotFoundError(
            f"no adapter matching {identifier!r} for model {model_name} on {base}"
        )
    if len(entries) > 1:
        raise AmbiguousIdentifierError(f"Found multiple possible adapters matching {identifier!r}.")
    entry = entries[0]

    config_dict = None
    if config is not None:
        config_dict = resolve_config_dict(config, base, session)
    if config_dict is not None:
        for candidate in config_hash_candidates(config_dict):
            if candidate in entry:
                found = _matching_version(entry[candidate], parsed.org)
                if found is None:
                    raise AdapterNotFoundError(
                        f"no adapter by {parsed.org!r} matching {identifier!r} with config "
                        f"{candidate} for model {model_name} on {base}"
                    )
                return found
    if config is None or not strict:
        if "default" in entry:
            if config is not None:
                logger.info(
                    "no adapter with exactly this config for %r; using the default", identifier
                )
            return entry["default"]
        if len(entry) == 1:
            found = _matching_version(next(iter(entry.values())), parsed.org)
            if found is not None:
                return found
    raise AdapterNotFoundError(
        f"no adapter matching {identifier!r}"
        + (f" with config {config!r}" if config is not None else "")
        + f" for model {model_name} on {base}"
    )


# ---------------------------------------------------------------------------------------------
# Download and cache
# ---------------------------------------------------------------------------------------------


def _ref_path(root: Path, kind: str, key: str) -> Path:
    return root / "refs" / kind / key


def _read_ref(root: Path, kind: str, key: str) -> Path | None:
    ref = _ref_path(root, kind, key)
    try:
        sha256 = ref.read_text(encoding="ascii").strip()
    except OSError:
        return None
    folder = root / "archives" / sha256
    return folder if re.fullmatch(r"[0-9a-f]{64}", sha256) and folder.is_dir() else None


def _write_ref(root: Path, kind: str, key: str, sha256: str) -> None:
    ref = _ref_path(root, kind, key)
    ref.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ref.parent, prefix=".ref.")
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(sha256)
    os.replace(tmp, ref)


def _stream_to_file(
    session: requests.Session, url: str, destination: Path, limits: ExtractionLimits
) -> tuple[str, str]:
    """Download ``url`` to ``destination``; return its (sha256, sha1)."""
    from tqdm.auto import tqdm

    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    try:
        response = session.get(url, stream=True, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise HubUnavailableError(f"could not download {url}: {exc}") from exc
    with response:
        if response.status_code != 200:
            raise HubUnavailableError(f"could not download {url}: HTTP {response.status_code}")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limits.max_download_bytes:
            raise UnsafeArchiveError(
                f"{url} is {total} bytes; at most {limits.max_download_bytes} are allowed"
            )
        received = 0
        name = PurePosixPath(urlsplit(url).path).name or "archive"
        with (
            destination.open("wb") as out,
            tqdm(
                total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=False
            ) as progress,
        ):
            try:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    received += len(chunk)
                    if received > limits.max_download_bytes:
                        raise UnsafeArchiveError(
                            f"{url} is over {limits.max_download_bytes} bytes; refusing"
                        )
                    sha256.update(chunk)
                    sha1.update(chunk)
                    out.write(chunk)
                    progress.update(len(chunk))
            except requests.RequestException as exc:
                raise AdapterError(f"download of {url} failed: {exc}") from exc
        if total is not None and received != total:
            raise AdapterError(f"download of {url} stopped at {received} of {total} bytes")
    return sha256.hexdigest(), sha1.hexdigest()


def download_archive(
    url: str,
    sha256: str | None = None,
    sha1: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    session: requests.Session | None = None,
    limits: ExtractionLimits | None = None,
) -> Path:
    """Download a zip archive, verify its checksum, extract it safely, return the cached folder.

    The folder is ``<cache>/archives/<sha256>``; a second call with the same sha256 (or sha1, or
    for a URL without checksum, the same URL) finds it and sends no request. sha256 is checked
    when given, else sha1; on mismatch ChecksumMismatchError is raised and nothing is extracted.
    """
    root = cache_root(cache_dir)
    sha256 = sha256.lower() if sha256 else None
    sha1 = sha1.lower() if sha1 else None
    if sha256:
        cached = root / "archives" / sha256
        if cached.is_dir():
            return cached
    elif sha1:
        cached = _read_ref(root, "sha1", sha1)
        if cached:
            return cached
    else:
        cached = _read_ref(root, "url", hashlib.sha256(url.encode("utf-8")).hexdigest())
        if cached:
            return cached

    limits = limits or ExtractionLimits.from_env()
    session = session or _session()
    staging = root / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="download-", dir=staging))
    try:
        archive = work / "archive"
        actual256, actual1 = _stream_to_file(session, url, archive, limits)
        if sha256 and actual256 != sha256:
            raise ChecksumMismatchError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual256}"
            )
        if not sha256 and sha1 and actual1 != sha1:
            raise ChecksumMismatchError(
                f"checksum mismatch for {url}: expected sha1 {sha1}, got {actual1}"
            )
        if not zipfile.is_zipfile(archive):
            raise UnsafeArchiveError(f"{url} is not a zip archive (only zip is supported)")
        extracted = safe_extract_zip(archive, work / "extracted", limits)
        final = root / "archives" / actual256
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(extracted, final)
        except OSError:
            if not final.is_dir():  # a concurrent download won the race otherwise
                raise
        if sha1 and not sha256:
            _write_ref(root, "sha1", sha1, actual256)
        if not sha1 and not sha256:
            _write_ref(root, "url", hashlib.sha256(url.encode("utf-8")).hexdigest(), actual256)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _fetch_adapter_entry(
    session: requests.Session, base: str, path: str, identifier: str
) -> dict[str, Any]:
    url = urljoin(base, path)
    entry = _fetch_json(session, url)
    if entry is None:
        raise AdapterNotFoundError(f"no adapter {identifier} on {base} ({url}: HTTP 404)")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("files"), Mapping):
        raise AdapterError(f"{url} is not an adapter entry (no 'files')")
    return dict(entry)


def pull_from_hub(
    identifier: str,
    model_name: str | None = None,
    config: str | Mapping[str, Any] | Any | None = None,
    version: str | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    base: str | None = None,
) -> str:
    """Resolve an AdapterHub identifier through the legacy index and return the local folder."""
    base = base or index_base_url()
    session = _session()
    if identifier.startswith("@"):
        org, _, name = identifier[1:].partition("/")
        if not org or not name or "/" in name:
            raise AdapterNotFoundError(f"{identifier!r} is not of the form @org/name")
        path = f"adapters/{quote(org, safe='')}/{quote(name, safe='')}.json"
    else:
        if not model_name:
            raise AdapterNotFoundError(
                f"cannot resolve {identifier!r} without the model's name (pass model_name)"
            )
        path = find_in_index(identifier, model_name, config, strict, base, session)
    return _pull_index_entry(identifier, path, version, cache_dir, base, session)


def _pull_index_entry(
    identifier: str,
    path: str,
    version: str | None,
    cache_dir: str | os.PathLike | None,
    base: str,
    session: requests.Session,
) -> str:
    """Step 5: fetch the adapter entry at ``path``, pick the version, download and extract."""
    entry = _fetch_adapter_entry(session, base, path, identifier)
    files = entry["files"]
    chosen = version or entry.get("default_version")
    if chosen not in files:
        raise AdapterNotFoundError(
            f"version {chosen!r} of {identifier} not found on {base}; "
            f"available: {', '.join(sorted(files)) or 'none'}"
        )
    file_entry = files[chosen]
    if not file_entry.get("sha256") and not file_entry.get("sha1"):
        raise AdapterError(f"index entry {path} version {chosen} has no checksum; refusing")
    url = urljoin(base, file_entry["url"])
    folder = download_archive(
        url,
        sha256=file_entry.get("sha256"),
        sha1=file_entry.get("sha1"),
        cache_dir=cache_dir,
        session=session,
    )
    return str(folder)


def pull_from_hf(
    repo_id: str,
    version: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> str:
    """Download repo ``org/name`` (revision ``version``) from a Hugging-Face-compatible endpoint."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = (endpoint or hf_endpoint()).rstrip("/")
    hf_cache = None
    if cache_dir is not None or os.environ.get("ADAPTERS_CORE_CACHE"):
        hf_cache = cache_root(cache_dir) / "hf"
    try:
        folder = snapshot_download(
            repo_id,
            revision=version,
            endpoint=endpoint,
            cache_dir=hf_cache,
            library_name="adapters_core",
        )
    except RevisionNotFoundError:
        raise AdapterNotFoundError(
            f"no revision {version!r} of repository {repo_id} on {endpoint}"
        ) from None
    except RepositoryNotFoundError:
        raise AdapterNotFoundError(f"no repository {repo_id} on {endpoint}") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise AdapterError(f"could not download {repo_id} from {endpoint}: {exc}") from exc
    return str(folder)


def _looks_like_path(identifier: str) -> bool:
    return (
        identifier.startswith(("/", "./", "../", "~", "\\"))
        or identifier in (".", "..")
        or bool(_WINDOWS_DRIVE.match(identifier))
        or identifier.count("/") > 1
    )


def resolve_adapter_path(
    identifier: str,
    config: str | Mapping[str, Any] | Any | None = None,
    version: str | None = None,
    model_name: str | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Return a local folder holding the adapter that ``identifier`` names.

    - an existing folder: returned as it is;
    - ``http(s)://...``: a zip archive, downloaded, extracted safely and cached;
    - ``@org/name``, ``task/subtask@org``, ``subtask@org``, ``task``: the AdapterHub index
      (``config`` picks among configs by hash, ``version`` among versions);
    - ``org/name``: first the AdapterHub index as ``task/subtask`` when ``model_name`` is
      given, then a repository on the Hugging-Face-compatible endpoint (``version`` is the
      revision).

    Raises AdapterNotFoundError when nothing matches, AmbiguousIdentifierError when several
    adapters match, ChecksumMismatchError / UnsafeArchiveError for bad downloads.
    """
    if not isinstance(identifier, str) or not identifier.strip():
        raise AdapterNotFoundError("an adapter identifier must be a non-empty string")
    scheme = urlsplit(identifier).scheme.lower()
    if scheme in ("http", "https"):
        return str(download_archive(identifier, cache_dir=cache_dir))
    expanded = os.path.expanduser(identifier)
    if os.path.isdir(expanded):
        return identifier
    if _looks_like_path(identifier) or os.path.exists(expanded):
        raise AdapterNotFoundError(f"no adapter folder at {identifier}")

    hub_kwargs = dict(config=config, version=version, strict=strict, cache_dir=cache_dir)
    if "@" in identifier or "/" not in identifier:
        return pull_from_hub(identifier, model_name=model_name, **hub_kwargs)

    # "a/b": a task/subtask of the index, or an org/name repository.
    hub_error: AdapterError | None = None
    if model_name:
        base, session = index_base_url(), _session()
        try:
            path = find_in_index(identifier, model_name, config, strict, base, session)
        except (AdapterNotFoundError, HubUnavailableError) as exc:
            hub_error = exc
            logger.info("%s; trying %s as a repository on %s", exc, identifier, hf_endpoint())
        else:
            return _pull_index_entry(identifier, path, version, cache_dir, base, session)
    try:
        return pull_from_hf(identifier, version=version, cache_dir=cache_dir)
    except AdapterNotFoundError as exc:
        if hub_error is None:
            raise
        raise AdapterNotFoundError(f"{hub_error}; {exc}") from exc
