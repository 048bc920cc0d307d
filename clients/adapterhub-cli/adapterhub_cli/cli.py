"""`adapterhub`: the contributor's command line, a client of the hub's REST API (no Django here).

    adapterhub login [--token T | --username U]
    adapterhub push DIR --task T --subtask S [--type text_task] [--org O] [--name N]
                        [--version V] [--description ...] [--wait]
    adapterhub search [QUERY] [--task T] [--subtask S] [--model M]
    adapterhub download ORG/NAME [--version V] [-o DIR]

ADAPTERHUB_URL is the hub's base URL (default http://127.0.0.1:8000); ADAPTERHUB_TOKEN, else the
token `login` stored in $XDG_CONFIG_HOME/adapterhub/token (mode 0600).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from adapterhub_cli.extract import ArchiveError, unpack

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 1024 * 1024
FINAL = {"published", "rejected"}


# Exit codes: 0 done; 1 the hub answered with an error; 2 usage (argparse's too); 3 the hub could not
# be reached, timed out or answered something unexpected; 4 the upload was rejected by validation.
EXIT_ERROR, EXIT_USAGE, EXIT_NETWORK, EXIT_REJECTED = 1, 2, 3, 4


class CliError(Exception):
    exit_code = EXIT_ERROR


# -- configuration -------------------------------------------------------------------------------


def base_url() -> str:
    return (os.environ.get("ADAPTERHUB_URL") or DEFAULT_URL).rstrip("/")


def token_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "adapterhub" / "token"


def read_token() -> str | None:
    token = os.environ.get("ADAPTERHUB_TOKEN")
    if token:
        return token.strip()
    path = token_path()
    return path.read_text().strip() if path.is_file() else None


def store_token(token: str) -> Path:
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def session(token: str | None = None, required: bool = False) -> requests.Session:
    s = requests.Session()
    token = token or read_token()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif required:
        raise CliError("no API token: run `adapterhub login` or set ADAPTERHUB_TOKEN")
    s.headers["User-Agent"] = "adapterhub-cli"
    return s


def _error(response: requests.Response) -> CliError:
    try:
        body = response.json()
        detail = body.get("detail", "")
        errors = body.get("errors") or {}
        extra = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in errors.items())
        message = f"{detail} {extra}".strip()
    except ValueError:
        message = response.text[:300]
    return CliError(f"HTTP {response.status_code}: {message}")


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
        disable=None,
    )  # fmt: skip


# -- login ---------------------------------------------------------------------------------------


def cmd_login(args) -> int:
    url = base_url()
    if args.username:
        password = os.environ.get("ADAPTERHUB_PASSWORD") or getpass.getpass("Password: ")
        response = requests.post(
            f"{url}/api/v1/tokens/",
            json={"name": "adapterhub login", "scope": "write"},
            auth=(args.username, password),
            timeout=30,
        )
        if response.status_code != 201:
            raise _error(response)
        token = response.json()["token"]
    else:
        token = args.token or getpass.getpass("API token (ahub_...): ")
        response = session(token).get(f"{url}/api/v1/tokens/", timeout=30)
        if response.status_code != 200:
            raise _error(response)
    path = store_token(token.strip())
    print(f"token stored in {path}")
    return 0


# -- push ----------------------------------------------------------------------------------------


def zip_adapter_folder(folder: Path, target: Path) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.name == "adapter_config.json" for p in files):
        raise CliError(f"{folder} has no adapter_config.json: is it a save_adapter folder?")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.name)


class MultipartBody:
    """A multipart/form-data body streamed from disk with a known length (so the server gets a
    Content-Length), reporting progress as it is read."""

    def __init__(self, fields: dict[str, str], file_field: str, path: Path, progress=None):
        self.boundary = uuid.uuid4().hex
        head = b""
        for name, value in fields.items():
            head += (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n"
            ).encode()
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
            f'filename="{path.name}"\r\nContent-Type: application/zip\r\n\r\n'
        ).encode()
        self.parts = [head, path, f"\r\n--{self.boundary}--\r\n".encode()]
        self.len = len(head) + path.stat().st_size + len(self.parts[2])
        self.progress = progress
        self._gen = self._chunks()
        self._buffer = b""

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _chunks(self):
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
                continue
            with open(part, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    if self.progress is not None:
                        self.progress.update(len(chunk))
                    yield chunk

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._gen, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def cmd_push(args) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder")
    http = session(required=True)
    fields = {"task": args.task, "subtask": args.subtask, "type": args.type}
    for key in ("org", "name", "version", "description"):
        if getattr(args, key):
            fields[key] = getattr(args, key)
    with tempfile.TemporaryDirectory(prefix="adapterhub-push-") as tmp:
        archive = Path(tmp) / f"{folder.name or 'adapter'}.zip"
        zip_adapter_folder(folder, archive)
        with _progress(archive.stat().st_size, "upload") as bar:
            body = MultipartBody(fields, "archive", archive, bar)
            response = http.post(
                f"{base_url()}/api/v1/uploads/",
                data=body,
                headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
                timeout=(10, 600),
            )
    if response.status_code != 202:
        raise _error(response)
    upload = response.json()
    print(f"upload {upload['id']}: {upload['status']} ({upload['status_url']})")
    if not args.wait:
        return 0
    upload = wait_for(http, upload, args.timeout)
    print_report(upload)
    return 0 if upload["status"] == "published" else EXIT_REJECTED


def wait_for(http: requests.Session, upload: dict, timeout: float) -> dict:
    """Poll the upload's status until it is final, showing the state and the time on a tqdm
    status line; one plain line per change when stderr is not a terminal."""
    from tqdm.auto import tqdm

    deadline = time.monotonic() + timeout
    delay = 0.25
    started, shown = time.monotonic(), None
    live = sys.stderr.isatty()
    status_url = upload["status_url"]
    with tqdm(
        total=None, desc="validation", bar_format="{desc} [{elapsed}]",
        file=sys.stderr, disable=not live,
    ) as bar:  # fmt: skip
        while True:
            state = describe(upload)
            if state != shown:
                shown = state
                bar.set_description_str(f"validation: {state}")
                if not live:
                    print(
                        f"validation: {state} ({time.monotonic() - started:.0f}s)", file=sys.stderr
                    )
            if upload["status"] in FINAL:
                return upload
            if time.monotonic() > deadline:
                raise CliError(
                    f"upload {upload['id']} is still {upload['status']} after {timeout}s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            bar.refresh()
            response = http.get(status_url, timeout=30)
            if response.status_code != 200:
                raise _error(response)
            upload = response.json()


def describe(upload: dict) -> str:
    """The state as the status line shows it; a final one names the failed check or the count."""
    state = upload["status"]
    report = upload.get("report") or []
    failed = [e["name"] for e in report if e.get("ok") is False]
    if state == "rejected" and failed:
        return f"rejected: check {failed[0]} failed"
    if state == "published" and report:
        return f"published: {sum(e.get('ok') is True for e in report)} checks passed"
    return state


def print_report(upload: dict) -> None:
    print(f"status: {upload['status']}")
    for entry in upload.get("report") or []:
        mark = {True: "ok", False: "FAILED", None: "skipped"}[entry["ok"]]
        print(f"  {entry['name']:<8} {mark:<7} {entry['duration_ms']:>9.1f} ms  {entry['message']}")
    adapter = upload.get("adapter")
    if adapter:
        print(f"adapter: {adapter['id']} version {adapter['version']} ({adapter['identifier']})")
    elif upload.get("message"):
        print(f"message: {upload['message']}")


# -- search and download -------------------------------------------------------------------------


def cmd_search(args) -> int:
    params: dict[str, Any] = {"page_size": args.limit}
    if args.query:
        params["q"] = args.query
    for key, param in (("task", "task"), ("subtask", "subtask"), ("model", "model_name")):
        if getattr(args, key):
            params[param] = getattr(args, key)
    response = session().get(f"{base_url()}/api/v1/adapters/", params=params, timeout=30)
    if response.status_code != 200:
        raise _error(response)
    body = response.json()
    rows = body.get("results", body) if isinstance(body, dict) else body
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(
            f"{row['id']:<60} {row['identifier']:<40} {row['model_name']} ({row['architecture']})"
        )
    if not rows:
        print("no adapters found", file=sys.stderr)
    return 0


def _split_id(identifier: str) -> tuple[str, str]:
    org, _, name = identifier.lstrip("@").partition("/")
    if not org or not name:
        raise CliError(f"expected ORG/NAME (or @ORG/NAME), got {identifier!r}")
    return org, name


def cmd_download(args) -> int:
    org, name = _split_id(args.adapter)
    http = session()
    root = f"{base_url()}/api/v1/adapters/{quote(org, safe='')}/{quote(name, safe='')}/"
    response = http.get(root, timeout=30)
    if response.status_code != 200:
        raise _error(response)
    detail = response.json()
    version = args.version or detail["default_version"]
    entry = next((v for v in detail["versions"] if v["version"] == version), None)
    if entry is None:
        raise CliError(f"{detail['id']} has no version {version!r}")
    if detail.get("status") == "yanked":
        print(f"warning: {detail['id']} was yanked by a moderator", file=sys.stderr)
    target = Path(args.output or f"{org}_{name}_{version}")
    if target.exists():
        raise CliError(f"{target} exists already")
    with tempfile.TemporaryDirectory(prefix="adapterhub-download-") as tmp:
        archive = Path(tmp) / "adapter.zip"
        url = f"{root}versions/{quote(version, safe='')}/download"
        sha256 = hashlib.sha256()
        with http.get(url, stream=True, timeout=(10, 600)) as r:
            if r.status_code != 200:
                raise _error(r)
            total = int(r.headers.get("Content-Length") or 0)
            with open(archive, "wb") as fh, _progress(total, "download") as bar:
                for chunk in r.iter_content(CHUNK):
                    fh.write(chunk)
                    sha256.update(chunk)
                    bar.update(len(chunk))
        if entry.get("sha256") and sha256.hexdigest() != entry["sha256"]:
            raise CliError(
                f"checksum mismatch: got {sha256.hexdigest()}, the hub says {entry['sha256']}"
            )
        try:
            unpack(archive, target)
        except (ArchiveError, zipfile.BadZipFile) as exc:
            raise CliError(f"refusing the downloaded archive: {exc}") from None
    print(target)
    return 0


# -- entry point ---------------------------------------------------------------------------------

EPILOG = f"""environment variables:
  ADAPTERHUB_URL     the hub's base URL (default {DEFAULT_URL})
  ADAPTERHUB_TOKEN   an API token; else the one `login` stored in
                     $XDG_CONFIG_HOME/adapterhub/token (default ~/.config)
  XDG_CONFIG_HOME    where `login` stores the token

example:
  export ADAPTERHUB_URL=https://hub.example.org
  adapterhub login --username alice
  adapterhub push ./my-adapter --task sentiment --subtask sst-2 --wait
  adapterhub download alice/my-adapter -o ./downloaded

exit codes: 0 done, 1 the hub answered with an error, 2 usage, 3 network (unreachable, timeout,
unexpected answer), 4 the upload was rejected by validation.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapterhub",
        description=__doc__.split("\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = sub.add_parser("login", help="store an API token")
    login.add_argument("--token", help="the token (prompted for when missing)")
    login.add_argument("--username", help="create a write token with your password instead")
    login.set_defaults(func=cmd_login)

    push = sub.add_parser("push", help="upload an adapter folder written by save_adapter")
    push.add_argument("dir", help="the folder save_adapter wrote (adapter_config.json and weights)")
    push.add_argument("--task", required=True, help="catalogue task, e.g. sentiment")
    push.add_argument("--subtask", required=True, help="catalogue subtask, e.g. sst-2")
    push.add_argument("--type", default="text_task", help="adapter type (default: text_task)")
    push.add_argument("--org", help="default: your personal organisation")
    push.add_argument("--name", help="default: <model>_<task>_<subtask>_<architecture>")
    push.add_argument("--version", help="default: the next number")
    push.add_argument("--description", help="what the adapter does, shown on its page")
    push.add_argument("--wait", action="store_true", help="wait for the validation's result")
    push.add_argument("--timeout", type=float, default=900, help="seconds --wait waits")
    push.set_defaults(func=cmd_push)

    search = sub.add_parser("search", help="search the hub's adapters")
    search.add_argument("query", nargs="?", help="words to look for (all adapters when left out)")
    search.add_argument("--task", help="only this task")
    search.add_argument("--subtask", help="only this subtask")
    search.add_argument("--model", help="only adapters for this base model")
    search.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    search.add_argument("--json", action="store_true", help="print JSON instead of lines")
    search.set_defaults(func=cmd_search)

    download = sub.add_parser("download", help="download and unpack an adapter version")
    download.add_argument("adapter", help="ORG/NAME")
    download.add_argument("--version", help="a version (default: the default one)")
    download.add_argument("-o", "--output", help="target folder (must not exist)")
    download.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except requests.Timeout:
        print(f"error: {base_url()} did not answer in time", file=sys.stderr)
        return EXIT_NETWORK
    except requests.ConnectionError:
        print(f"error: cannot reach {base_url()} (is ADAPTERHUB_URL right?)", file=sys.stderr)
        return EXIT_NETWORK
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        # A proxy's HTML page or another server's answer: not what this hub sends.
        kind = type(exc).__name__
        print(f"error: unexpected answer from {base_url()} ({kind}: {exc})", file=sys.stderr)
        return EXIT_NETWORK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
