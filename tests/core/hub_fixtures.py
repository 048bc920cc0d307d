"""A local HTTP server for hub tests: a fake ``dist/v2`` index, archives and a tiny HF endpoint.

The server runs in a thread on 127.0.0.1 (random port) and records every request, so tests can
assert what was (not) fetched.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
from safetensors.torch import save as save_safetensors

PFEIFFER_HASH = "9076f36a74755ac4"
HOULSBY_HASH = "b1017368d7a97b11"
PFEIFFER_INV_HASH = "9ed5b5a29de19b71"
PFEIFFER_GELU_RF2_HASH = "d345095bcb01e325"

ARCHITECTURES = Path(__file__).resolve().parents[2].parent / "shared/hub-dist-examples/v2"


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------


def adapter_files(name: str, marker: float = 1.0) -> dict[str, bytes]:
    """The files of a minimal adapter folder whose weight value ``marker`` identifies it."""
    config = {
        "config": {"reduction_factor": 16, "non_linearity": "relu"},
        "hidden_size": 4,
        "model_name": "bert-base-uncased",
        "model_type": "bert",
        "name": name,
        "version": "adapters.1.3.0",
    }
    weights = {
        f"bert.encoder.layer.0.output.adapters.{name}.adapter_up.weight": torch.full((4, 2), marker)
    }
    return {
        "adapter_config.json": json.dumps(config, indent=2, sort_keys=True).encode(),
        "adapter.safetensors": save_safetensors(weights),
    }


def make_zip(files: Mapping[str, bytes], folder: str | None = None) -> bytes:
    """A deflated zip of ``files``, flat or inside ``folder``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}" if folder else name, data)
    return buffer.getvalue()


def make_symlink_zip(link_name: str = "adapter.safetensors", target: str = "/etc/passwd") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adapter_config.json", b"{}")
        info = zipfile.ZipInfo(link_name)
        info.create_system = 3  # unix, so external_attr carries the file type
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def make_raw_name_zip(name: str) -> bytes:
    """A zip with one member named exactly ``name`` (zipfile would sanitise it on write)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adapter_config.json", b"{}")
        info = zipfile.ZipInfo("placeholder")
        info.filename = name
        archive.writestr(info, b"pwned")
    return buffer.getvalue()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeHFRevision:
    sha: str
    files: dict[str, bytes]


class FakeServer:
    """Static routes plus an optional fake HF endpoint under ``/hf``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        # repo id -> revision name (branch/tag, or the sha itself) -> revision
        self.hf_repos: dict[str, dict[str, FakeHFRevision]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -------------------------------------------------------------------------------
    def add(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = Route(body, status, dict(headers))
        return self.url(path)

    def add_json(self, path: str, obj: object) -> str:
        return self.add(path, json.dumps(obj).encode(), **{"Content-Type": "application/json"})

    def add_hf_repo(self, repo_id: str, revisions: Mapping[str, Mapping[str, bytes]]) -> None:
        repo: dict[str, FakeHFRevision] = {}
        for name, files in revisions.items():
            sha = hashlib.sha1(f"{repo_id}@{name}".encode()).hexdigest()
            revision = FakeHFRevision(sha, dict(files))
            repo[name] = revision
            repo[sha] = revision
        self.hf_repos[repo_id] = repo

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path if self._server else path

    def requested(self, path_prefix: str = "") -> list[str]:
        with self._lock:
            return [path for _, path in self.requests if path.startswith(path_prefix)]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------
    def respond(self, method: str, raw_path: str) -> Route:
        with self._lock:
            self.requests.append((method, raw_path))
        path = urlsplit(raw_path).path
        if path.startswith("/hf/"):
            return self._respond_hf(method, path[len("/hf") :])
        route = self.routes.get(unquote(path))
        return route or Route(b'{"detail": "not found"}', 404)

    def _respond_hf(self, method: str, path: str) -> Route:
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id = "/".join(segments[2:4])
            rest = segments[4:]
            repo = self.hf_repos.get(repo_id)
            if repo is None:
                return _hf_error("RepoNotFound")
            revision_name = rest[1] if len(rest) >= 2 else "main"
            revision = repo.get(revision_name)
            if revision is None:
                return _hf_error("RevisionNotFound")
            if not rest or rest[0] == "revision":
                info = {
                    "id": repo_id,
                    "sha": revision.sha,
                    "siblings": [{"rfilename": name} for name in sorted(revision.files)],
                }
                return Route(
                    json.dumps(info).encode(), headers={"Content-Type": "application/json"}
                )
            if rest[0] == "tree":
                tree = [
                    {
                        "type": "file",
                        "path": name,
                        "oid": hashlib.sha1(data).hexdigest(),
                        "size": len(data),
                    }
                    for name, data in sorted(revision.files.items())
                ]
                return Route(
                    json.dumps(tree).encode(), headers={"Content-Type": "application/json"}
                )
            return Route(b"{}", 404)
        if len(segments) >= 5 and segments[2] == "resolve":
            repo = self.hf_repos.get("/".join(segments[:2]))
            if repo is None:
                return _hf_error("RepoNotFound")
            revision = repo.get(segments[3])
            if revision is None:
                return _hf_error("RevisionNotFound")
            file_path = "/".join(segments[4:])
            if file_path not in revision.files:
                route = _hf_error("EntryNotFound")
                route.headers["X-Repo-Commit"] = revision.sha
                return route
            data = revision.files[file_path]
            return Route(
                data,
                headers={"X-Repo-Commit": revision.sha, "ETag": f'"{sha256_of(data)}"'},
            )
        return Route(b"{}", 404)


def _hf_error(code: str) -> Route:
    return Route(json.dumps({"error": code}).encode(), 404, {"X-Error-Code": code})


def _make_handler(owner: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, with_body: bool) -> None:
            route = owner.respond(self.command, self.path)
            self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if with_body:
                self.wfile.write(route.body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._send(with_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(with_body=False)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


# ---------------------------------------------------------------------------------------------
# A fake AdapterHub index
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeHub:
    """A ``dist/v2`` tree on a FakeServer; ``archives[path]`` are the bytes of each zip."""

    server: FakeServer
    base: str
    archives: dict[str, bytes] = field(default_factory=dict)

    def publish_adapter(
        self,
        org: str,
        file: str,
        versions: Mapping[str, bytes],
        default_version: str | None = None,
        checksums: str = "both",
        config_id: str = PFEIFFER_HASH,
    ) -> str:
        """Serve ``adapters/<org>/<file>.json`` and its archives; return the index path."""
        files = {}
        for version, archive in versions.items():
            archive_path = f"/files/{org}/{file}-{version}.zip"
            self.server.add(archive_path, archive, **{"Content-Type": "application/zip"})
            self.archives[archive_path] = archive
            entry = {"url": self.server.url(archive_path)}
            if checksums in ("both", "sha1"):
                entry["sha1"] = sha1_of(archive)
            if checksums in ("both", "sha256"):
                entry["sha256"] = sha256_of(archive)
            files[version] = entry
        path = f"adapters/{org}/{file}.json"
        self.server.add_json(
            f"/dist/v2/{path}",
            {
                "config_id": config_id,
                "default_version": default_version or next(iter(versions)),
                "files": files,
                "info": {"adapter_id": f"@{org}/{file}", "username": org, "source": "ah"},
            },
        )
        return path


def build_fake_hub(server: FakeServer) -> FakeHub:
    """Publish a small index for ``bert-base-uncased`` covering every resolution branch."""
    hub = FakeHub(server, server.url("/dist/v2/"))
    arch = json.loads((ARCHITECTURES / "architectures.json").read_text())
    server.add_json("/dist/v2/architectures.json", arch)

    def adapter(org: str, file: str, marker: float, **kwargs) -> str:
        return hub.publish_adapter(
            org, file, {"1": make_zip(adapter_files(file, marker))}, **kwargs
        )

    sst_pf_ukp = hub.publish_adapter(
        "ukp",
        "sst2_pfeiffer",
        {
            "1": make_zip(adapter_files("sst2_pfeiffer", 1.0)),
            "2": make_zip(adapter_files("sst2_pfeiffer", 2.0), folder="sst2_pfeiffer"),
        },
        default_version="1",
    )
    sst_pf_other = adapter("other", "sst2_pfeiffer", 3.0)
    sst_hb = adapter("ukp", "sst2_houlsby", 4.0, config_id=HOULSBY_HASH)
    sst_gelu = adapter("ukp", "sst2_gelu", 5.0, config_id=PFEIFFER_GELU_RF2_HASH)
    glue_sst = adapter("ukp", "glue_sst2", 6.0)
    imdb = adapter("ukp", "imdb", 7.0, checksums="sha1")
    wiki_de = adapter("ukp", "wiki_de", 8.0, config_id=PFEIFFER_INV_HASH)
    squad_a = adapter("alice", "squad", 9.0)
    squad_b = adapter("bob", "squad", 10.0)
    bad = hub.publish_adapter("ukp", "bad_checksum", {"1": make_zip(adapter_files("bad", 11.0))})
    # Corrupt the published checksum of "bad_checksum".
    entry = json.loads(server.routes[f"/dist/v2/{bad}"].body)
    entry["files"]["1"]["sha256"] = "0" * 64
    server.add_json(f"/dist/v2/{bad}", entry)

    index = {
        "sentiment": {
            "sst-2": {
                PFEIFFER_HASH: {"versions": {"ukp": sst_pf_ukp, "other": sst_pf_other}},
                HOULSBY_HASH: {"versions": {"ukp": sst_hb}},
                PFEIFFER_GELU_RF2_HASH: {"versions": {"ukp": sst_gelu}},
                "default": sst_pf_ukp,
            },
            "imdb": {PFEIFFER_HASH: {"versions": {"ukp": imdb}}, "default": imdb},
            "broken": {PFEIFFER_HASH: {"versions": {"ukp": bad}}, "default": bad},
        },
        "glue": {"sst-2": {PFEIFFER_HASH: {"versions": {"ukp": glue_sst}}, "default": glue_sst}},
        "lang": {"de": {PFEIFFER_INV_HASH: {"versions": {"ukp": wiki_de}}}},
        "qa": {"squad": {PFEIFFER_HASH: {"versions": {"alice": squad_a, "bob": squad_b}}}},
    }
    server.add_json("/dist/v2/index/bert-base-uncased.json", index)
    return hub


def read_marker(folder: str | Path) -> float:
    """The marker value of the adapter in ``folder`` (see adapter_files)."""
    from adapters_core.loading import read_state_dict

    state = read_state_dict(Path(folder) / "adapter.safetensors")
    (tensor,) = state.values()
    return float(tensor.flatten()[0])
