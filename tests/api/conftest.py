"""The API tests read the real Hub snapshot, synced once for the whole tests/api package.

The sync commits outside the per-test transactions (django_db_blocker), so each test sees the
291 cards and rolls back only its own writes; the package's teardown empties the catalogue again.
The read path's stores are emptied around every test (`clear_read_caches`): a test's rolled-back
writes must not leave cached pages behind.
"""

import uuid
from pathlib import Path

import pytest
import yaml
from django.test import override_settings

from hub_server.catalog.models import (
    Adapter,
    AdapterType,
    Architecture,
    Subtask,
    SyncLock,
    SyncRun,
    Task,
)
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import SNAPSHOT, clear_read_caches, make_git_repo


@pytest.fixture(scope="package")
def catalog(django_db_setup, django_db_blocker, tmp_path_factory) -> Path:
    """The snapshot synced into the test database; returns the git repository it came from."""
    root = tmp_path_factory.mktemp("api-catalog")
    repo = make_git_repo(SNAPSHOT, root / "hub-repo")
    with django_db_blocker.unblock(), override_settings(HUB_DATA_DIR=root / "hub-data"):
        run = sync_hub_repository(str(repo))
        assert run.status == SyncRun.Status.SUCCEEDED and not run.errors, run.message
    yield repo
    with django_db_blocker.unblock():
        Adapter.objects.all().delete()
        for model in (Subtask, Task, Architecture, AdapterType, SyncRun, SyncLock):
            model.objects.all().delete()


@pytest.fixture(autouse=True)
def clear_response_cache(request, django_db_blocker):
    uses_db = request.node.get_closest_marker("django_db") or (
        "django_db_setup" in request.fixturenames
    )
    if uses_db:
        request.getfixturevalue("django_db_setup")
        with django_db_blocker.unblock():  # a test counting queries counts its requests' own
            clear_read_caches(read_generation=True)
    else:
        clear_read_caches()
    yield
    clear_read_caches()


def snapshot_cards() -> list[dict]:
    """Every adapter card of the snapshot, read straight from its YAML (the expectations of the
    tests come from here, never from the API), with `org` and `name` added."""
    cards = []
    for path in sorted((SNAPSHOT / "adapters").glob("*/*.y*ml")):
        data = yaml.safe_load(path.read_text())
        data["org"], data["name"] = path.parent.name, path.stem
        cards.append(data)
    return cards


def ids(cards) -> set[str]:
    return {f"@{c['org']}/{c['name']}" for c in cards}


SCRATCH_REDIS = "redis://127.0.0.1:6379/14"


@pytest.fixture
def redis_backend():
    """Makes Django Redis cache backends on a scratch Redis database, all with one fresh key
    prefix (as the processes of one hub share theirs); skips where no Redis runs."""
    import redis

    from hub_server.cache_backends import RedisCache

    try:
        redis.Redis.from_url(SCRATCH_REDIS).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"test-{uuid.uuid4().hex}"
    return lambda: RedisCache(SCRATCH_REDIS, {"KEY_PREFIX": prefix})
