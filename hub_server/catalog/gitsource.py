"""The git side of a sync: a bare working clone per source under HUB_DATA_DIR, read by commit.

Files are read from git objects at a commit (no checkout), so a sync sees exactly one commit and
never a half-updated work tree. Talking to the remote (clone, fetch) is the only step that can hang
on the network: it runs as its own process group under a deadline and is killed whole past it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git


class SourceError(Exception):
    """The repository could not be cloned or fetched, or the branch does not exist."""


@dataclass
class Change:
    status: str  # "A", "M" or "D"
    path: str


def clone_dir_for(source: str, data_dir: Path) -> Path:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", source.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    return data_dir / "repos" / f"{label}-{digest}.git"


def _short(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "fatal" in ln or "error" in ln] or lines
    return (useful[-1] if useful else "git failed").strip("' ")


class _GitFailed(Exception):
    pass


def _run_git(args: list[str], cwd: Path, deadline: float) -> None:
    """Run git until `deadline` (time.monotonic()); past it, kill git and all it started."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    proc = subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: helpers (remote-http, ssh) die with it
        text=True,
        errors="replace",
    )
    try:
        _, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode:
        raise _GitFailed(_short(stderr))


class GitSource:
    def __init__(self, source: str, branch: str | None, data_dir: Path):
        self.source = source
        self.branch = branch or None
        self.path = clone_dir_for(source, data_dir)
        self.repo: git.Repo | None = None

    def fetch(self, timeout: float = 120) -> str:
        """Clone or fetch within `timeout` seconds; return the commit sha of the branch."""
        deadline = time.monotonic() + timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._fetch_lock(deadline):
                if (self.path / "HEAD").exists():
                    _run_git(["fetch", "--force", "--prune", "origin",
                              "+refs/heads/*:refs/heads/*"], self.path, deadline)  # fmt: skip
                else:
                    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=self.path.parent))
                    try:
                        _run_git(["clone", "--bare", "--", self.source, str(tmp)],
                                 self.path.parent, deadline)  # fmt: skip
                        tmp.rename(self.path)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"cannot fetch {self.source}: no answer within {timeout:g} s "
                "(HUB_SYNC_FETCH_TIMEOUT_SECONDS); nothing was changed"
            ) from exc
        except _GitFailed as exc:
            raise SourceError(f"cannot fetch {self.source}: {exc}") from exc
        return self.head()

    @contextmanager
    def _fetch_lock(self, deadline: float):
        """One fetch per clone at a time (on this host); waiting counts against the deadline."""
        with open(self.path.parent / f"{self.path.name}.lock", "w") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired("git fetch", 0) from None
                    time.sleep(0.05)
            yield  # closing the file releases the lock

    def head(self) -> str:
        """The commit of the branch (or the remote's default) in the local clone: no network."""
        try:
            self.repo = git.Repo(self.path)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
            raise SourceError(f"cannot fetch {self.source}: not a git repository ({exc})") from exc
        ref = f"refs/heads/{self.branch}" if self.branch else "HEAD"
        try:
            return self.repo.commit(ref).hexsha
        except (git.BadName, ValueError) as exc:
            what = f"branch {self.branch!r}" if self.branch else "a default branch"
            raise SourceError(f"{self.source} has no {what}") from exc

    def list_files(self, commit: str) -> dict[str, str]:
        """path -> blob sha of every file at the commit."""
        tree = self.repo.commit(commit).tree
        return {item.path: item.hexsha for item in tree.traverse() if item.type == "blob"}

    def has_commit(self, sha: str) -> bool:
        try:
            self.repo.commit(sha)
            return True
        except (git.BadName, ValueError):
            return False

    def changes(self, old: str, new: str) -> list[Change]:
        out = self.repo.git.diff("--name-status", "--no-renames", "-z", old, new)
        fields = [f for f in out.split("\0") if f]
        return [Change(fields[i][0], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]

    def read(self, commit: str, path: str) -> tuple[bytes, str]:
        blob = self.repo.commit(commit).tree / path
        return blob.data_stream.read(), blob.hexsha

    def blob_ids(self, commit: str, paths) -> dict[str, str]:
        """path -> blob sha for those of `paths` that are files at the commit."""
        tree = self.repo.commit(commit).tree
        found = {}
        for p in paths:
            try:
                item = tree / p
            except KeyError:
                continue
            if item.type == "blob":
                found[p] = item.hexsha
        return found

    def blob_size(self, sha: str) -> int:
        """Bytes of a blob, from its object header (the content is not read)."""
        return self.repo.odb.info(bytes.fromhex(sha)).size

    def read_blob(self, sha: str) -> bytes:
        return self.repo.odb.stream(bytes.fromhex(sha)).read()
