"""The `adapterhub` CLI as its own package (clients/adapterhub-cli): it installs into a bare venv
with only requests and tqdm, and `push --wait` shows the validation's progress."""

from __future__ import annotations

import email.parser
import fcntl
import http.server
import json
import os
import pty
import shutil
import socket
import struct
import subprocess
import sys
import termios
import threading
import venv
import zipfile
from pathlib import Path

import pytest

from hub_server import cli
from tests.conftest import CLI_PACKAGE, PYTHONPATH, ROOT


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_the_cli_installs_alone_with_only_requests_and_tqdm(tmp_path):
    # Built from a copy, so the build leaves nothing in the repository.
    source = tmp_path / "src"
    shutil.copytree(CLI_PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("adapterhub_cli-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(name).decode())
    requires = sorted(
        r.split(">")[0].split("=")[0].strip() for r in metadata.get_all("Requires-Dist")
    )
    assert requires == ["requests", "tqdm"]

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Neither the server nor the ML stack came along.
    probe = "import importlib.util as u; print([m for m in ('django', 'torch', 'hub_server', 'adapters_core', 'transformers') if u.find_spec(m)])"
    found = subprocess.run(
        [str(py), "-c", probe], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr

    adapterhub = env_dir / "bin" / "adapterhub"
    helped = subprocess.run(
        [str(adapterhub), "--help"], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "ADAPTERHUB_URL" in helped.stdout, helped.stderr
    down = subprocess.run(
        [str(adapterhub), "download", "alice/x", "-o", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**clean, "ADAPTERHUB_URL": f"http://127.0.0.1:{closed_port()}"},
    )  # fmt: skip
    assert down.returncode == cli.EXIT_NETWORK, down.stderr
    assert down.stderr.count("\n") == 1 and "cannot reach" in down.stderr
    assert not (tmp_path / "out").exists()


# -- push --wait against a hub that answers a fixed sequence of states -------------------------

REPORT_OK = [
    {"name": "archive", "ok": True, "message": "3 files", "duration_ms": 1.0},
    {"name": "load", "ok": True, "message": "loaded", "duration_ms": 20.0},
]
REPORT_FAILED = [
    {"name": "archive", "ok": True, "message": "3 files", "duration_ms": 1.0},
    {"name": "load", "ok": False, "message": "shape mismatch", "duration_ms": 20.0},
    {"name": "forward", "ok": None, "message": "skipped", "duration_ms": 0.0},
]


class FakeHub(http.server.BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/uploads/u1/"
        self._send(202, {"id": "u1", "status": "pending", "status_url": url})

    def do_GET(self):
        states = self.server.states
        status, report = states.pop(0) if len(states) > 1 else states[0]
        adapter = {"id": "alice/x", "version": "1", "identifier": "alice/x@1"}
        self._send(200, {"id": "u1", "status": status, "report": report, "message": "",
                         "adapter": adapter if status == "published" else None})  # fmt: skip

    def log_message(self, *args):
        pass


def push_wait(tmp_path: Path, states: list, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.states = list(states)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.run(
            [sys.executable, "-m", "hub_server.cli", "push", str(folder), "--task", "t",
             "--subtask", "s", "--wait"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "ADAPTERHUB_TOKEN": "ahub_x",
                 "ADAPTERHUB_URL": f"http://127.0.0.1:{server.server_address[1]}"},
        )  # fmt: skip
    finally:
        server.shutdown()


def states_shown(result: subprocess.CompletedProcess) -> list[str]:
    """The states `--wait` printed on a non-terminal stderr, without the elapsed seconds."""
    return [line.split(" (")[0] for line in result.stderr.splitlines() if "validation:" in line]


@pytest.mark.parametrize(
    "states, code, last, report_text",
    [
        (
            [("pending", []), ("validating", []), ("validating", []), ("published", REPORT_OK)],
            0,
            "published: 2 checks passed",
            ["status: published", "alice/x@1", "archive", "load"],
        ),
        (
            [("validating", []), ("rejected", REPORT_FAILED)],
            cli.EXIT_REJECTED,
            "rejected: check load failed",
            ["status: rejected", "FAILED", "shape mismatch"],
        ),
    ],
    ids=["published", "rejected"],
)
def test_wait_shows_each_state_in_order_and_the_exit_code_says_the_outcome(
    tmp_path, states, code, last, report_text
):
    result = push_wait(tmp_path, states)
    assert result.returncode == code, result.stderr
    assert states_shown(result) == [
        "validation: pending",
        "validation: validating",
        f"validation: {last}",
    ]
    for text in report_text:
        assert text in result.stdout


def test_wait_on_a_terminal_is_one_tqdm_status_line(tmp_path):
    main_fd, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        result = push_wait(tmp_path, [("validating", []), ("published", REPORT_OK)], terminal)
    finally:
        os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(main_fd)
    text = output.decode(errors="replace")
    assert result.returncode == 0
    # The line is redrawn in place (carriage returns), not one line per state.
    assert "\r" in text and "validation: published: 2 checks passed" in text
    assert text.index("validation: validating") < text.index("validation: published")
    assert "validation: validating (" not in text


# -- download's unpacking (the CLI cannot use adapters_core's extractor) -----------------------


def zip_with(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16  # a symlink
            zf.writestr(info, "/etc/passwd")
    return path


def test_unpack_drops_one_top_folder_and_refuses_escapes_and_links(tmp_path):
    from adapterhub_cli.extract import ArchiveError, unpack

    ok = zip_with(tmp_path / "ok.zip", {"x/adapter_config.json": b"{}", "x/w.bin": b"1"})
    unpack(ok, tmp_path / "ok")
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["adapter_config.json", "w.bin"]

    for name, archive, needle in (
        ("up", zip_with(tmp_path / "up.zip", {"../evil": b"x"}), "leaves"),
        ("abs", zip_with(tmp_path / "abs.zip", {"/tmp/evil": b"x"}), "absolute"),
        ("link", zip_with(tmp_path / "link.zip", {"a": b"x"}, link="l"), "link"),
    ):
        with pytest.raises(ArchiveError, match=needle):
            unpack(archive, tmp_path / name)
        assert not (tmp_path / name).exists()
    assert not (tmp_path / "evil").exists()
    big = zip_with(tmp_path / "big.zip", {"a": b"x" * 100})
    with pytest.raises(ArchiveError, match="more than 10 bytes"):
        unpack(big, tmp_path / "big", max_bytes=10)
