"""The demo catalogue: a Hub repository written here, turned into a git repository under
HUB_DATA_DIR and synced, so a new installation shows a working site offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
from django.conf import settings

from hub_server.catalog.models import SyncRun
from hub_server.catalog.sync import sync_hub_repository

DEMO_SOURCE = Path(__file__).resolve().parent / "demo_hub"


def demo_repository_path() -> Path:
    return Path(settings.HUB_DATA_DIR) / "demo-hub"


def prepare_demo_repository() -> Path:
    """Create (or bring up to date) the demo git repository; files added there by others stay."""
    path = demo_repository_path()
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="main")
    else:
        repo = git.Repo(path)
    for source in DEMO_SOURCE.rglob("*"):
        if source.is_file():
            target = path / source.relative_to(DEMO_SOURCE)
            if not target.exists() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    repo.git.add("-A")
    if repo.is_dirty(index=True, untracked_files=True) or not repo.head.is_valid():
        with repo.config_writer() as config:
            config.set_value("user", "name", "AdapterHub demo")
            config.set_value("user", "email", "demo@adapterhub.invalid")
        repo.index.commit("Demo catalogue")
    return path


def load_demo_catalogue() -> SyncRun:
    return sync_hub_repository(str(prepare_demo_repository()))
