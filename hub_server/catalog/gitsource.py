"""The git side of a sync: a bare working clone per source under HUB_DATA_DIR, read by commit.

Files are read from git objects at a commit (no checkout), so a sync sees exactly one commit and
never a half-updated work tree.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
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


def _short(exc: git.GitCommandError) -> str:
    lines = [ln.strip() for ln in str(exc.stderr or exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "fatal" in ln or "error" in ln] or lines
    return (useful[-1] if useful else str(exc)).strip("' ").removeprefix("stderr: ")


class GitSource:
    def __init__(self, source: str, branch: str | None, data_dir: Path):
        self.source = source
        self.branch = branch or None
        self.path = clone_dir_for(source, data_dir)
        self.repo: git.Repo | None = None

    def fetch(self) -> str:
        """Clone or fetch; return the commit sha of the branch (or the remote's default)."""
        try:
            if (self.path / "HEAD").exists():
                self.repo = git.Repo(self.path)
                self.repo.git.fetch("--force", "--prune", "origin", "+refs/heads/*:refs/heads/*")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=self.path.parent))
                try:
                    git.Repo.clone_from(self.source, tmp, bare=True)
                    tmp.rename(self.path)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                self.repo = git.Repo(self.path)
        except git.GitCommandError as exc:
            raise SourceError(f"cannot fetch {self.source}: {_short(exc)}") from exc
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

    def blob_ids(self, commit: str, paths: list[str]) -> dict[str, str]:
        tree = self.repo.commit(commit).tree
        return {p: (tree / p).hexsha for p in paths}

    def read_blob(self, sha: str) -> bytes:
        return self.repo.odb.stream(bytes.fromhex(sha)).read()
