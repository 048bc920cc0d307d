"""scripts/hf_model_endpoint.py as a real subprocess, serving model folders made for the test, and
the requests it logged (which files a fetch really downloaded)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import ROOT

from .conftest import TINY_BERT

SCRIPT = ROOT / "scripts" / "hf_model_endpoint.py"


class ModelEndpoint:
    def __init__(self, root: Path, log: Path, delay: float = 0.0):
        self.root, self.log, self.delay = root, log, delay
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> ModelEndpoint:
        cmd = [sys.executable, str(SCRIPT), str(self.root), "--port", "0"]
        if self.delay:
            cmd += ["--delay", str(self.delay)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on (http://\S+)", line)
        assert match, f"the endpoint did not start: {line!r}"
        self.url = match.group(1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def downloads(self, filename: str, status: int = 200) -> int:
        """How many GETs of a file (any model, any revision) answered `status` so far."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        pattern = rf'"GET /\S+/resolve/\S+/{re.escape(filename)} HTTP/1.1" {status}'
        return len(re.findall(pattern, text))

    def wait_downloads(self, filename: str, count: int, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.downloads(filename) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.downloads(filename)


def make_model_root(root: Path) -> Path:
    """org/tiny-bert: the interop tiny BERT (the test adapters are trained on it); other/tiny-bert:
    the same files (a second model for eviction); pickles/only-bin: a config and a pickle only."""
    for model_id in ("org/tiny-bert", "other/tiny-bert"):
        target = root / model_id
        target.mkdir(parents=True)
        for path in TINY_BERT.iterdir():
            shutil.copyfile(path, target / path.name)
    pickles = root / "pickles" / "only-bin"
    pickles.mkdir(parents=True)
    shutil.copyfile(TINY_BERT / "config.json", pickles / "config.json")
    torch.save(load_file(TINY_BERT / "model.safetensors"), pickles / "pytorch_model.bin")
    return root


def model_bytes(model_id: str, root: Path) -> int:
    return sum(p.stat().st_size for p in (root / model_id).iterdir())
