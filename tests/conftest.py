"""Fixtures shared by every test: where ../shared is, throw-away data dirs, git repositories."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SNAPSHOT = SHARED / "hub-snapshot"
DIST_EXAMPLES = SHARED / "hub-dist-examples" / "v2"
INTEROP = SHARED / "interop" / "adapters-1.3.0"
# The `adapterhub` CLI's own package; subprocesses that run `-m hub_server.cli` need it on the path
# even where the editable install predates it.
CLI_PACKAGE = ROOT / "clients" / "adapterhub-cli"
PYTHONPATH = f"{ROOT}{os.pathsep}{CLI_PACKAGE}"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


def git(repo: Path, *args: str) -> str:
    import os

    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_git_repo(source: Path, dest: Path) -> Path:
    """A git repository holding a copy of `source` in one commit (the shared data stays read-only)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".git"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    git(dest, "init", "-q", "-b", "main")
    commit_all(dest, "snapshot")
    return dest


@pytest.fixture
def snapshot_repo(tmp_path) -> Path:
    """The real Hub snapshot as a git repository of its own, in a temp dir."""
    return make_git_repo(SNAPSHOT, tmp_path / "hub-repo")


@pytest.fixture(autouse=True)
def hub_data_dir(tmp_path, settings) -> Path:
    """Every test gets its own HUB_DATA_DIR (working clones, files, cache)."""
    settings.HUB_DATA_DIR = tmp_path / "hub-data"
    # Tests never reach the network: a test that fetches base models names its local endpoint.
    settings.HUB_BASE_MODEL_ENDPOINT = ""
    return settings.HUB_DATA_DIR


def clear_read_caches(read_generation: bool = False) -> None:
    """Every per-process store of the read path emptied, and the configured cache cleared: a
    test's rolled-back writes must leave no page, index or id behind for the next test. (That
    a change made elsewhere reaches a running server without such a reset is what
    tests/api/test_live_reads.py checks.) With `read_generation`, the generation is read again
    here, so a test counting a cold render's queries counts the render's own."""
    from django.core.cache import cache

    from hub_server.api import search_index
    from hub_server.catalog.cache import clock, forget_responses
    from hub_server.catalog.filters import forget_reference_ids

    cache.clear()
    forget_responses()
    clock.expire()
    forget_reference_ids()
    search_index.forget()
    if read_generation:
        clock.current()


@pytest.fixture(autouse=True)
def steady_generation(settings):
    """In-process tests count queries: the catalogue generation is re-read from the database at
    the first request after `clear_read_caches`, not every few seconds in between. (The bound
    itself is tested with its real value in tests/api/test_live_reads.py and test_read_bounds.py.)"""
    settings.HUB_CATALOG_RECHECK_SECONDS = 3600
