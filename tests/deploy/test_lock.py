"""requirements/lock.txt: `make setup`, CI and the image install only from it, with hashes, so it
must hold every requirement of pyproject.toml (dependencies, the dev extra, the build
requirements), at a version the requirement accepts, and everything those need in turn.
After changing pyproject's dependencies: `make lock` and commit the lock."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})\s*$", re.M
)
MAKE_AGAIN = "run `make lock` and commit requirements/lock.txt"


def lock_pins() -> dict[str, Version]:
    text = LOCK.read_text()
    pins = {canonicalize_name(name): Version(version) for name, version, _ in PIN.findall(text)}
    entries = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(entries) == len(pins), "every entry of the lock is `name==version` with a sha256"
    return pins


def pyproject_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = (
        pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["dev"]
    )
    return [Requirement(r) for r in listed + pyproject["build-system"]["requires"]]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    # CPython 3.11 on Linux x86_64, the lock's platform.
    environment = {**default_environment(), "python_version": "3.11", "sys_platform": "linux"}
    environment |= {"platform_system": "Linux", "platform_machine": "x86_64"}
    return any(requirement.marker.evaluate({**environment, "extra": e}) for e in extras | {""})


def requirements_of(name: str, version: Version) -> list[Requirement]:
    """What the pinned distribution needs, read from the installed copy of that very version."""
    try:
        installed = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{name} of the lock is not installed here: run `make setup`")
    if Version(installed.version) != version:
        pytest.fail(f"{name} {installed.version} installed, the lock pins {version}: `make setup`")
    return [Requirement(r) for r in installed.requires or []]


def test_every_pyproject_requirement_is_pinned_at_a_version_it_accepts():
    pins = lock_pins()
    problems = []
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: the lock pins {pins[name]}")
    assert problems == [], f"{MAKE_AGAIN}: " + "; ".join(problems)


def test_the_lock_is_closed_under_dependencies_and_extras():
    """pip's hash mode refuses a lock that misses one dependency: catch it before a fresh
    machine does."""
    pins = lock_pins()
    wanted: dict[str, set[str]] = {name: set() for name in pins}
    for requirement in pyproject_requirements():
        wanted.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    missing = []
    for name, version in pins.items():
        for need in requirements_of(name, version):
            if not applies(need, wanted.get(name, set())):
                continue
            needed = canonicalize_name(need.name)
            if needed not in pins:
                missing.append(f"{needed} (needed by {name} {version})")
            elif not need.specifier.contains(pins[needed], prereleases=True):
                missing.append(f"{need} (by {name}), the lock pins {pins[needed]}")
    assert missing == [], f"{MAKE_AGAIN}: " + "; ".join(sorted(set(missing)))


def test_torch_is_the_cpu_build_and_the_installer_is_pinned():
    pins = lock_pins()
    assert pins["torch"].local == "cpu", "a CUDA torch would make the image gigabytes larger"
    assert "pip" in pins and "setuptools" in pins and "wheel" in pins
