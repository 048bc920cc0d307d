"""The `adapterhub` CLI as a new user meets it, without a hub: help for every argument, the
environment variables and an example in --help, one-line errors with distinct exit codes, and a
client that never imports torch."""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import subprocess
import sys
import threading

from hub_server import cli
from tests.conftest import PYTHONPATH, ROOT


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_server.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "ADAPTERHUB_TOKEN": "ahub_x", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_names_the_environment_an_example_and_every_argument():
    out = run("--help").stdout
    for text in ("ADAPTERHUB_URL", "ADAPTERHUB_TOKEN", "example:", "adapterhub push", "exit codes"):
        assert text in out
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help"


def test_an_unreachable_hub_is_one_line_and_exit_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    result = run("search", "x", env={"ADAPTERHUB_URL": f"http://127.0.0.1:{port}"})
    assert result.returncode == cli.EXIT_NETWORK
    assert result.stderr.count("\n") == 1 and "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html>proxy login</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_unexpected_answer_is_one_line_and_exit_3():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run("search", "x", env={"ADAPTERHUB_URL": url})
    finally:
        server.shutdown()
    assert result.returncode == cli.EXIT_NETWORK, result.stderr
    assert "unexpected answer" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2_and_the_client_never_imports_torch():
    assert run("push").returncode == cli.EXIT_USAGE
    code = "import sys, hub_server.cli; sys.exit('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": PYTHONPATH}
    )
    assert result.returncode == 0
