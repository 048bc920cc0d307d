"""A local Hugging-Face-compatible model endpoint: serves every model folder under ROOT over the HTTP
layout the hub's base-model fetch (and huggingface_hub) reads. Python standard library only, so it
runs in any container or CI job with no install: tests and the docker smoke start it to give
validators a base model with no network.

    python scripts/hf_model_endpoint.py ROOT [--host 127.0.0.1] [--port 8765] [--delay SECONDS]

A model is ROOT/<name>/ or ROOT/<org>/<name>/ (a folder that holds files directly). Routes:

    GET  /api/models                              ids of every model served
    GET  /api/models/<id>[/revision/<rev>]        {"id", "sha", "siblings": [{"rfilename", "size",
                                                  "lfs": {"sha256", "size", "pointerSize"}}]}
    GET  /api/models/<id>/tree/<rev>[/<folder>]   files (and folders) as the Hub lists them
    GET|HEAD /<id>/resolve/<rev>/<path>           the file, with X-Repo-Commit, ETag,
                                                  X-Linked-Etag, X-Linked-Size; Range honoured

The only revisions are "main" and the model's sha (a digest of its files' names and sha256), so a
client that pins the sha it read gets exactly those files. Unknown repository, revision or file
answer 404 with the X-Error-Code the Hub sends (RepoNotFound, RevisionNotFound,
EntryNotFound). --delay holds each file's body that long (tests of two fetches at once). It prints "serving ROOT on http://HOST:PORT" once listening (--port 0 picks a free
port).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
MODEL_ID_RE = re.compile(rf"^(?:{_PART}/)?{_PART}$")
CHUNK = 1 << 20


class ModelRoot:
    """The model folders under one root, with their files' sha256 remembered by (size, mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._digests: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def model_ids(self) -> list[str]:
        ids = []
        for first in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if _holds_files(first):
                ids.append(first.name)
                continue
            ids.extend(
                f"{first.name}/{second.name}"
                for second in sorted(p for p in first.iterdir() if p.is_dir())
                if _holds_files(second)
            )
        return ids

    def folder(self, model_id: str) -> Path | None:
        if not MODEL_ID_RE.match(model_id) or ".." in model_id or "--" in model_id:
            return None
        folder = (self.root / model_id).resolve()
        if folder.parent != self.root and folder.parent.parent != self.root:
            return None
        return folder if folder.is_dir() and _holds_files(folder) else None

    def files(self, folder: Path) -> list[Path]:
        return sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and not p.is_symlink()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        with self._lock:
            known = self._digests.get(path)
        if known and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
        with self._lock:
            self._digests[path] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
        return digest.hexdigest()

    def info(self, model_id: str, folder: Path) -> dict:
        siblings = []
        commit = hashlib.sha1()
        for path in self.files(folder):
            name = path.relative_to(folder).as_posix()
            size = path.stat().st_size
            sha = self.sha256(path)
            commit.update(f"{name}\0{sha}\0".encode())
            # pointerSize: the size of the git-lfs pointer file the Hub stores; clients only parse it
            lfs = {"sha256": sha, "size": size, "pointerSize": 134}
            siblings.append({"rfilename": name, "size": size, "lfs": lfs})
        return {
            "id": model_id,
            "modelId": model_id,
            "sha": commit.hexdigest(),
            "siblings": siblings,
        }


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.iterdir())


class Handler(BaseHTTPRequestHandler):
    server_version = "hf-model-endpoint/1"
    protocol_version = "HTTP/1.1"
    models: ModelRoot  # set on the subclass made in serve()
    delay: float = 0.0

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._route(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(send_body=False)

    def _route(self, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path.rstrip("/") == "/api/models":
            return self._json(self.models.model_ids(), send_body)
        if path.startswith("/api/models/") and "/tree/" in path:
            model_id, _, rest = path[len("/api/models/") :].strip("/").partition("/tree/")
            revision, _, folder = rest.partition("/")
            recursive = "recursive=true" in urlsplit(self.path).query.lower()
            return self._tree(model_id, revision, folder, recursive, send_body)
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :].strip("/")
            model_id, _, revision = rest.partition("/revision/")
            return self._model_info(model_id, revision or "main", send_body)
        if "/resolve/" in path:
            model_id, _, rest = path.strip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            return self._file(model_id, revision, filename, send_body)
        self._error(HTTPStatus.NOT_FOUND, "NotFound", f"no route for {path}", send_body)

    def _model(self, model_id: str, revision: str, send_body: bool) -> tuple[Path, dict] | None:
        folder = self.models.folder(model_id)
        if folder is None:
            self._error(
                HTTPStatus.NOT_FOUND,
                "RepoNotFound",
                f"Repository {model_id} not found",
                send_body,
            )
            return None
        info = self.models.info(model_id, folder)
        if revision not in ("main", info["sha"]):
            self._error(
                HTTPStatus.NOT_FOUND,
                "RevisionNotFound",
                f"Revision {revision} of {model_id} not found",
                send_body,
            )
            return None
        return folder, info

    def _model_info(self, model_id: str, revision: str, send_body: bool) -> None:
        found = self._model(model_id, revision, send_body)
        if found is not None:
            self._json(found[1], send_body)

    def _tree(
        self, model_id: str, revision: str, folder: str, recursive: bool, send_body: bool
    ) -> None:
        found = self._model(model_id, revision, send_body)
        if found is None:
            return
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries, folders = [], set()
        for sibling in found[1]["siblings"]:
            name = sibling["rfilename"]
            if not name.startswith(prefix):
                continue
            below = name[len(prefix) :].split("/")
            for depth in range(1, len(below) if recursive else min(len(below), 2)):
                folders.add(prefix + "/".join(below[:depth]))
            if recursive or len(below) == 1:
                lfs = {"oid": sibling["lfs"]["sha256"], "size": sibling["size"], "pointerSize": 134}
                oid = hashlib.sha1(sibling["lfs"]["sha256"].encode()).hexdigest()
                entries.append(
                    {"type": "file", "oid": oid, "size": sibling["size"], "path": name, "lfs": lfs}
                )
        if prefix and not entries and not folders:
            self._error(
                HTTPStatus.NOT_FOUND,
                "EntryNotFound",
                f"{folder} not found in {model_id}",
                send_body,
            )
            return
        entries.extend(
            {"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)
        )
        self._json(entries, send_body)

    def _file(self, model_id: str, revision: str, filename: str, send_body: bool) -> None:
        found = self._model(model_id, revision, send_body)
        if found is None:
            return
        folder, info = found
        by_name = {s["rfilename"]: s for s in info["siblings"]}
        sibling = by_name.get(filename)
        if sibling is None:
            self._error(
                HTTPStatus.NOT_FOUND,
                "EntryNotFound",
                f"{filename} not found in {model_id}",
                send_body,
            )
            return
        path = folder / filename
        size = sibling["size"]
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and size and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            else:
                start = max(size - int(wanted.group(2)), 0)
            if start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        etag = f'"{sibling["lfs"]["sha256"]}"'
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("X-Linked-Etag", etag)
        self.send_header("X-Linked-Size", str(size))
        self.send_header("X-Repo-Commit", info["sha"])
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body or not size:
            return
        if self.delay:
            time.sleep(self.delay)
        with path.open("rb") as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _json(self, payload: object, send_body: bool) -> None:
        body = json.dumps(payload).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, code: str, message: str, send_body: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def serve(root: Path, host: str, port: int, delay: float = 0.0) -> ThreadingHTTPServer:
    handler = type("ModelHandler", (Handler,), {"models": ModelRoot(root), "delay": delay})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", type=Path, help="folder holding <name>/ or <org>/<name>/ model folders"
    )
    parser.add_argument("--host", default=os.environ.get("HF_MODEL_ENDPOINT_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("HF_MODEL_ENDPOINT_PORT", "8765"))
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each file body")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    server = serve(args.root, args.host, args.port, args.delay)
    host, port = server.server_address[:2]
    print(f"serving {args.root.resolve()} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
