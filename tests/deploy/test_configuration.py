"""docs/configuration.md against docker-compose.yml and .env.example: a variable an operator is
told to set reaches every container whose code reads it, or it silently does nothing.

Which container reads a variable is found in the code (Django's settings and everything under
hub_server/ and adapters_core/ run in web, worker and beat; docker/gunicorn.conf.py only in web;
the entrypoint by role). A row of the table whose description starts with `compose only` (read
by Compose itself), `build only` (a build argument), `host only`, `tests only` and the like (never
in a container: MARKERS) is checked for that instead."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

DOCS = ROOT / "docs" / "configuration.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
APP = ("web", "worker", "beat")
# Code -> the app containers that run it.
READERS = {
    "hub_server": APP,
    "adapters_core": APP,
    "scripts/stack/dbready.py": APP,  # the entrypoint waits for the database in every role
    "docker/gunicorn.conf.py": ("web",),
}
# Passed with a value of compose's own, not the operator's: the reason is the documentation.
FIXED = {
    "DATABASE_URL": "built from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB",
    "CELERY_BROKER_URL": "the stack's own broker Redis",
    "REDIS_URL": "the stack's own cache Redis",
    "DJANGO_DEBUG": "a container is production",
    "DJANGO_BEHIND_PROXY": "nginx is the only way in",
    "HUB_VAR_DIR": "the image collects its static files there",
    "HUB_DATA_DIR": "the hubdata volume",
    "HUB_FILES_DIR": "on the hubdata volume, where nginx reads them",
    "GUNICORN_BIND": "nginx's upstream is web:8000",
}
# How a description starts -> where the variable is read instead of the app's containers.
MARKERS = {
    "compose only": "compose",
    "build only": "build",
    "host only": "host",
    "tests only": "tests",
    "`scripts/stack/` only": "host",
    "the `adapterhub` CLI": "host",
}
NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def documented() -> dict[str, str]:
    """Each variable of the table -> its marker ('' when containers read it)."""
    found: dict[str, str] = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 5 or not cells[1].startswith("`"):
            continue
        marker = next((m for start, m in MARKERS.items() if cells[3].startswith(start)), "")
        for name in NAME.findall(cells[1]):
            found[name] = marker
    assert len(found) > 50, "docs/configuration.md's table was not found"
    return found


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the x- anchors and `<<` merges


def interpolated() -> set[str]:
    lines = COMPOSE_FILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{([A-Z0-9_]+)", text))


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def entrypoint_readers() -> dict[str, set[str]]:
    """Variables of docker/entrypoint.sh -> roles: inside a `web)` branch only web, and so on."""
    readers: dict[str, set[str]] = {}
    role = None
    for line in ENTRYPOINT.read_text().splitlines():
        branch = re.match(r"^\s*([a-z*]+)\)", line)
        if branch:
            role = branch.group(1) if branch.group(1) in APP else "other"
        elif line.strip() == "esac":
            role = None
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", line):
            if role in APP:
                readers.setdefault(name, set()).add(role)
            elif role is None:
                readers.setdefault(name, set()).update(APP)
    return readers


def code_readers(names: set[str]) -> dict[str, set[str]]:
    """Each name -> the app containers whose code reads it (empty: no code of the image does)."""
    readers: dict[str, set[str]] = {name: set() for name in names}
    for where, services in READERS.items():
        path = ROOT / where
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            text = file.read_text()
            for name in names:
                if re.search(rf"[\"']{name}[\"']", text):
                    readers[name].update(services)
    for name, roles in entrypoint_readers().items():
        if name in readers:
            readers[name].update(roles)
    return readers


def test_every_documented_variable_reaches_the_containers_that_read_it():
    docs = documented()
    services = compose()["services"]
    readers = code_readers({name for name, marker in docs.items() if not marker})
    problems = []
    for name, reading in sorted(readers.items()):
        if not reading:
            problems.append(f"{name}: no code of the image reads it (mark it host/tests only?)")
        environments = {s: services[s].get("environment") or {} for s in sorted(reading)}
        missing = [s for s, environment in environments.items() if name not in environment]
        if missing:
            problems.append(f"{name}: read by {', '.join(missing)}, not passed there")
        fixed = [
            s
            for s, environment in environments.items()
            if name in environment
            and name not in FIXED
            and f"${{{name}" not in str(environment[name])
        ]
        if fixed:
            problems.append(f"{name}: {', '.join(fixed)} get a fixed value, .env cannot change it")
    assert problems == [], "docs/configuration.md vs docker-compose.yml:\n" + "\n".join(problems)


def test_compose_and_build_variables_are_read_where_the_docs_say():
    docs = documented()
    used = interpolated()
    dockerfiles = (ROOT / "docker").rglob("Dockerfile")
    text = "\n".join(path.read_text() for path in dockerfiles)
    dockerfile_args = set(re.findall(r"^ARG ([A-Z0-9_]+)", text, re.M))
    problems = [
        f"{n}: compose only, but compose never reads it"
        for n, m in docs.items()
        if m == "compose" and n not in used
    ]
    problems += [
        f"{n}: build only, but no build argument"
        for n, m in docs.items()
        if m == "build" and n not in dockerfile_args
    ]
    assert problems == []


def test_every_variable_of_env_example_is_documented_and_read_by_compose():
    """A line of .env.example that compose never reads, or that the docs do not explain, is a
    setting the operator changes for nothing."""
    docs = documented()
    used = interpolated()
    problems = []
    for name in env_example():
        if name not in docs:
            problems.append(f"{name} is not documented in docs/configuration.md")
        if name not in used:
            problems.append(f"{name} is never read by docker-compose.yml")
    assert problems == []


DUMP = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({k: repr(getattr(s, k)) for k in dir(s) if k.isupper()}))"
)


def settings_with(env: dict[str, str], tmp_path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in env and not k.startswith("DJANGO_")}
    base = {"DJANGO_SETTINGS_MODULE": "hub_server.settings", "HUB_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", DUMP],
        cwd=ROOT,
        env={**clean, **base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_an_empty_value_from_compose_means_the_documented_default(tmp_path):
    """Compose passes `${NAME:-}` as an empty string when .env leaves NAME empty: the settings
    must read that as unset, not as an empty URL, path or rate."""
    environment = compose()["x-app-environment"]
    empty = sorted(n for n, v in environment.items() if re.fullmatch(rf"\$\{{{n}:?-\}}", str(v)))
    assert empty, "no variable defaults to empty in compose: this test checks nothing"
    production = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 50}
    unset = settings_with(production, tmp_path)
    blank = settings_with({**production, **dict.fromkeys(empty, "")}, tmp_path)
    # (a callable's repr holds its address: not a value an operator sets)
    changed = sorted(k for k in unset if blank.get(k) != unset[k] and " at 0x" not in unset[k])
    assert changed == [], f"an empty {empty} changes these settings: {changed}"


@pytest.mark.parametrize("name", ["HUB_MIGRATE_ON_START", "CELERY_WORKER_CONCURRENCY"])
def test_role_variables_reach_their_role(name):
    """The operations guide tells operators to set these; the entrypoint reads them per role."""
    roles = entrypoint_readers()[name]
    for role in roles:
        assert f"${{{name}" in str(compose()["services"][role]["environment"].get(name))


def test_env_example_comments_match_the_operations_guide():
    """What .env.example's comments tell an operator to set is what docs/operations.md says, and
    every variable either names is one the operator can set in .env."""
    env = env_example()
    docs = documented()
    comments = "\n".join(
        line for line in ENV_EXAMPLE.read_text().splitlines() if line.lstrip().startswith("#")
    )
    named = set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b", comments))
    assert named - set(docs) == set(), "comments of .env.example name undocumented variables"
    guide = (ROOT / "docs" / "operations.md").read_text()
    told = set(re.findall(r"`([A-Z][A-Z0-9_]+)=[^`]*`", guide))
    told |= set(re.findall(r"^([A-Z][A-Z0-9_]+)=", guide, re.M))  # lines of .env in code blocks
    compose_set = {n for n in told if n in docs and docs[n] not in ("host", "tests")} - set(FIXED)
    assert compose_set - set(env) == set(), "docs/operations.md sets variables .env lacks"

    def trial(text: str) -> set[str]:
        start = text.index("trial on")
        return set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", text[start : start + 400]))

    assert trial(comments) == trial(guide), "the trial settings differ from docs/operations.md"
