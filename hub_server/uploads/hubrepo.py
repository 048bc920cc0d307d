"""Committing published cards into the Hub git repository (a local work tree), so git stays the
source of truth: HUB_PUBLISH_REPO, default the demo repository; branch HUB_PUBLISH_BRANCH, default
one branch per upload (`upload/<id>`) except on the demo repository, which commits to main.

A branch other than the checked-out one is written with plumbing (a temporary index), so the work
tree is never switched under another process; a file lock serialises the writers of one repo.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

COMMITTER = {"GIT_COMMITTER_NAME": "AdapterHub", "GIT_COMMITTER_EMAIL": "hub@adapterhub.invalid"}


class HubRepositoryError(Exception):
    pass


@dataclass(frozen=True)
class CommittedCard:
    branch: str
    commit: str
    blob: str
    changed: bool


def publish_repository() -> Path:
    if settings.HUB_PUBLISH_REPO:
        return Path(settings.HUB_PUBLISH_REPO)
    from hub_server.catalog.demo import demo_repository_path, prepare_demo_repository

    path = demo_repository_path()
    return path if (path / ".git").exists() else prepare_demo_repository()


def publish_branch(upload_id: int) -> str:
    if settings.HUB_PUBLISH_BRANCH:
        return settings.HUB_PUBLISH_BRANCH
    return "main" if not settings.HUB_PUBLISH_REPO else f"upload/{upload_id}"


def _git(repo: Path, *args: str, stdin: str | None = None, env: dict | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=stdin,
        env={**os.environ, **COMMITTER, **(env or {})},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise HubRepositoryError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _try_git(repo: Path, *args: str) -> str | None:
    try:
        return _git(repo, *args)
    except HubRepositoryError:
        return None


@contextmanager
def _locked(repo: Path):
    with open(Path(repo) / ".git" / "adapterhub-publish.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def blob_id(content: str) -> str:
    """The git blob id of a file's content (what the sync records as source_blob)."""
    import hashlib

    data = content.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_card(
    repo: Path, branch: str, path: str, content: str, message: str, author: tuple[str, str]
) -> CommittedCard:
    """Commit `content` at `path` on `branch` (created from HEAD when missing); a no-op when the
    branch already holds exactly this content. Pushed to HUB_PUBLISH_REMOTE when set."""
    repo = Path(repo)
    env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]}
    with _locked(repo):
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
        parent = _try_git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}")
        base = parent or _git(repo, "rev-parse", "HEAD")
        if _try_git(repo, "rev-parse", "-q", "--verify", f"{base}:{path}") == blob:
            if parent is None:
                _git(repo, "update-ref", f"refs/heads/{branch}", base, "")
            _push(repo, branch)
            return CommittedCard(branch, base, blob, changed=False)
        checked_out = _try_git(repo, "symbolic-ref", "-q", "--short", "HEAD")
        if checked_out == branch:
            target = repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            _git(repo, "add", "--", path)
            _git(repo, "commit", "-q", "-m", message, "--", path, env=env)
            commit = _git(repo, "rev-parse", "HEAD")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                _git(repo, "read-tree", base, env=index)
                _git(
                    repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index
                )
                tree = _git(repo, "write-tree", env=index)
            commit = _git(repo, "commit-tree", tree, "-p", base, "-m", message, env=env)
            _git(repo, "update-ref", f"refs/heads/{branch}", commit, parent or "")
        _push(repo, branch)
        return CommittedCard(branch, commit, blob, changed=True)


def _push(repo: Path, branch: str) -> None:
    if settings.HUB_PUBLISH_REMOTE:
        _git(repo, "push", "-q", settings.HUB_PUBLISH_REMOTE, f"refs/heads/{branch}")


def read_card(repo: Path, branch: str, path: str) -> str | None:
    return _try_git(Path(repo), "show", f"refs/heads/{branch}:{path}")
