"""The optional git export of published cards: with HUB_PUBLISH_REPO (a clone of a Hub repository)
every card this hub publishes is also committed there, on one branch per upload (`upload/<id>`,
for review) or on HUB_PUBLISH_BRANCH, and pushed to HUB_PUBLISH_REMOTE when set. The catalogue
itself does not need it: a published adapter's card is its row (docs/catalog-sync.md).

With a remote, the remote is the store and the clone only a cache: each commit is made on top of
the remote branch's tip, fetched first, and a push refused because another worker pushed first is
made again on the new tip; so workers with clones of their own all end up on one branch. Without a
remote, the clone is the store and every worker must share it (one filesystem); a file lock
serialises its writers, and a branch other than the checked-out one is written with plumbing (a
temporary index), so the work tree is never switched under another process.
"""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

# Tries of commit-on-the-remote-tip-and-push before the publish gives up (and is tried again).
PUSH_ATTEMPTS = 8
COMMITTER = {"GIT_COMMITTER_NAME": "AdapterHub", "GIT_COMMITTER_EMAIL": "hub@adapterhub.invalid"}


class HubRepositoryError(Exception):
    pass


class HubRepositoryBusy(HubRepositoryError):
    """Other publishers kept pushing first: nothing was published, try again later."""


@dataclass(frozen=True)
class CommittedCard:
    branch: str
    commit: str
    blob: str
    changed: bool


def publish_repository() -> Path | None:
    """The clone to export published cards to; None when the export is off (the default)."""
    return Path(settings.HUB_PUBLISH_REPO) if settings.HUB_PUBLISH_REPO else None


def publish_branch(upload_id: int) -> str:
    return settings.HUB_PUBLISH_BRANCH or f"upload/{upload_id}"


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
        remote = settings.HUB_PUBLISH_REMOTE
        if not remote:
            return _commit_local(repo, branch, path, content, message, env, blob)
        for _ in range(PUSH_ATTEMPTS):
            committed = _commit_on_remote_tip(repo, remote, branch, path, message, env, blob)
            if committed is not None:
                return committed
            time.sleep(random.uniform(0.05, 0.3))  # another worker pushed first: its tip, again
        raise HubRepositoryBusy(
            f"git push to {remote} was refused {PUSH_ATTEMPTS} times: other publishers kept "
            "pushing first"
        )


def _commit_local(repo, branch, path, content, message, env, blob) -> CommittedCard:
    parent = _try_git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}")
    base = parent or _git(repo, "rev-parse", "HEAD")
    if _try_git(repo, "rev-parse", "-q", "--verify", f"{base}:{path}") == blob:
        if parent is None:
            _git(repo, "update-ref", f"refs/heads/{branch}", base, "")
        return CommittedCard(branch, base, blob, changed=False)
    if _try_git(repo, "symbolic-ref", "-q", "--short", "HEAD") == branch:
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        _git(repo, "add", "--", path)
        _git(repo, "commit", "-q", "-m", message, "--", path, env=env)
        return CommittedCard(branch, _git(repo, "rev-parse", "HEAD"), blob, changed=True)
    commit = _commit_tree(repo, base, path, blob, message, env)
    _git(repo, "update-ref", f"refs/heads/{branch}", commit, parent or "")
    return CommittedCard(branch, commit, blob, changed=True)


def _commit_tree(repo: Path, base: str, path: str, blob: str, message: str, env: dict) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", base, env=index)
        _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
        tree = _git(repo, "write-tree", env=index)
    return _git(repo, "commit-tree", tree, "-p", base, "-m", message, env=env)


def _commit_on_remote_tip(repo, remote, branch, path, message, env, blob) -> CommittedCard | None:
    """One try: commit on the remote branch's tip and push; None when the push was refused."""
    tracking = f"refs/remotes/{remote}/{branch}"
    try:
        _git(repo, "fetch", "-q", remote, f"+refs/heads/{branch}:{tracking}")
        tip = _git(repo, "rev-parse", tracking)
    except HubRepositoryError as exc:
        if "couldn't find remote ref" not in str(exc):
            raise
        tip = None  # a new branch: it starts from the local branch, else HEAD
    local = _try_git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}")
    base = tip or local or _git(repo, "rev-parse", "HEAD")
    if tip and _try_git(repo, "rev-parse", "-q", "--verify", f"{base}:{path}") == blob:
        _set_local_branch(repo, branch, base)
        return CommittedCard(branch, base, blob, changed=False)
    commit = _commit_tree(repo, base, path, blob, message, env)
    result = subprocess.run(
        ["git", "push", "-q", remote, f"{commit}:refs/heads/{branch}"],
        cwd=repo,
        env={**os.environ, **COMMITTER, "GIT_TERMINAL_PROMPT": "0"},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if any(word in result.stderr for word in ("rejected", "fetch first", "non-fast-forward")):
            return None
        raise HubRepositoryError(f"git push {remote} failed: {result.stderr.strip()}")
    _set_local_branch(repo, branch, commit)
    return CommittedCard(branch, commit, blob, changed=True)


def _set_local_branch(repo: Path, branch: str, commit: str) -> None:
    """The clone follows what the remote holds (its work tree too, when the branch is out)."""
    if _try_git(repo, "symbolic-ref", "-q", "--short", "HEAD") == branch:
        _git(repo, "reset", "-q", "--keep", commit)
    else:
        _git(repo, "update-ref", f"refs/heads/{branch}", commit)


def read_card(repo: Path, branch: str, path: str) -> str | None:
    return _try_git(Path(repo), "show", f"refs/heads/{branch}:{path}")
