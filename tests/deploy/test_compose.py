"""docker-compose.yml: valid for Compose with .env.example, a health check on every service, no
secret written into it, and named volumes that keep the database and the adapter files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
APP_SERVICES = ("web", "worker", "beat")
REQUIRED_SECRETS = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|(?<!CACHE_)KEY(?!_PREFIX)")

needs_compose = pytest.mark.skipif(
    not os.path.exists(COMPOSE), reason=f"{COMPOSE} is missing (Debian package docker-compose)"
)


def compose_config(env_file, *args: str) -> subprocess.CompletedProcess:
    # Variables of this shell would win over the env file: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "POSTGRES_"))}
    return subprocess.run(
        [COMPOSE, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
        + ["--env-file", str(env_file), *args, "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    if not os.path.exists(COMPOSE):
        pytest.skip(f"{COMPOSE} is missing (Debian package docker-compose)")
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


@needs_compose
def test_validates_with_env_example_and_with_the_minio_profile(config):
    assert set(config["services"]) >= {"postgres", "redis", *APP_SERVICES, "nginx"}
    result = compose_config(ENV_EXAMPLE, "--profile", "minio")
    assert result.returncode == 0, result.stderr
    assert "minio" in yaml.safe_load(result.stdout)["services"]


@needs_compose
@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_a_missing_required_secret_stops_compose(tmp_path, secret):
    env_file = tmp_path / "incomplete.env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith(f"{secret}=")))
    result = compose_config(env_file)
    assert result.returncode != 0
    assert secret in result.stderr


@needs_compose
def test_every_service_has_a_health_check(config):
    for name, service in config["services"].items():
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"service {name} has no health check"


def test_no_secret_is_written_into_the_compose_file(raw):
    def environments():
        for name, service in raw["services"].items():
            yield name, service.get("environment") or {}
        for key, value in raw.items():
            if key.startswith("x-") and isinstance(value, dict) and "DATABASE_URL" in value:
                yield key, value

    for where, environment in environments():
        assert isinstance(environment, dict), f"{where}: environment as a mapping, please"
        for key, value in environment.items():
            if SECRET_NAME.search(key) or key == "DATABASE_URL":
                assert "${" in str(value), f"{where}: {key} is written into the compose file"
    text = COMPOSE_FILE.read_text()
    for secret in REQUIRED_SECRETS:
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} is not required with ${{VAR:?}}"
    assert "${POSTGRES_PASSWORD:?" in raw["x-app-environment"]["DATABASE_URL"]


def test_env_example_documents_every_variable_of_the_compose_file():
    lines = COMPOSE_FILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = env_example()
    assert used - set(documented) == set()
    # The placeholders are recognisable, so the entrypoint can refuse to run with them.
    for secret in REQUIRED_SECRETS:
        assert "CHANGE-ME" in documented[secret]
    assert "CHANGE-ME" in (ROOT / "docker" / "entrypoint.sh").read_text()


@needs_compose
def test_named_volumes_keep_the_database_and_the_files(config):
    volumes = set(config.get("volumes") or {})

    def mounts(service: str) -> dict[str, dict]:
        found = {}
        for mount in config["services"][service].get("volumes") or []:
            if isinstance(mount, str):  # short syntax: source:target[:mode]
                source, target, *mode = mount.split(":")
                mount = {"type": "volume", "source": source, "target": target}
                mount["read_only"] = mode == ["ro"]
            found[mount["target"]] = mount
        return found

    pg = mounts("postgres")["/var/lib/postgresql/data"]
    assert pg["type"] == "volume" and pg["source"] in volumes
    sources = set()
    for service in APP_SERVICES:
        env = config["services"][service]["environment"]
        files = mounts(service)[env["HUB_DATA_DIR"]]
        assert files["type"] == "volume" and files["source"] in volumes
        assert env["HUB_FILES_DIR"].startswith(env["HUB_DATA_DIR"] + "/")
        sources.add(files["source"])
    assert len(sources) == 1, "web, worker and beat must share one files volume"
    # nginx reads the same files (read-only) for X-Accel-Redirect downloads.
    nginx = config["services"]["nginx"]
    files_root = nginx["environment"]["NGINX_FILES_ROOT"]
    web_env = config["services"]["web"]["environment"]
    assert files_root == web_env["HUB_FILES_DIR"]
    nginx_mount = next(m for t, m in mounts("nginx").items() if files_root.startswith(t))
    assert nginx_mount["source"] in sources and nginx_mount.get("read_only")


@needs_compose
def test_app_services_run_the_production_settings(config):
    web = config["services"]["web"]
    env = web["environment"]
    assert env["DJANGO_DEBUG"] == "0"
    assert env["DATABASE_URL"].startswith("postgres://")
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert env["HUB_ACCEL_REDIRECT_PREFIX"] == "/_files"
    assert env["DJANGO_BEHIND_PROXY"] == "1"
    # One image for the three roles, chosen by the command.
    images = {config["services"][s]["image"] for s in APP_SERVICES}
    assert len(images) == 1
    assert {config["services"][s]["command"][0] for s in APP_SERVICES} == set(APP_SERVICES)
    # Only nginx publishes a port (Caddy too, with the profile tls: then nginx's is on loopback).
    services = config["services"].items()
    published = [name for name, s in services if s.get("ports") and not s.get("profiles")]
    assert published == ["nginx"]


def test_the_cache_redis_evicts_and_the_broker_redis_never_does(raw):
    """maxmemory-policy is per Redis instance: the cache (allkeys-lru, capped) and the Celery
    broker (noeviction: a queued task must never be dropped) are two instances."""

    def flags(service: str) -> dict[str, str]:
        command = raw["services"][service]["command"]
        return {k.lstrip("-"): v for k, v in zip(command[1::2], command[2::2], strict=False)}

    environment = raw["x-app-environment"]
    broker = environment["CELERY_BROKER_URL"].split("//")[1].split(":")[0]
    cache = environment["REDIS_URL"].split("//")[1].split(":")[0]
    assert broker != cache
    assert flags(broker)["maxmemory-policy"] == "noeviction"
    assert flags(cache)["maxmemory-policy"] == "allkeys-lru"
    assert flags(cache)["maxmemory"]
    assert cache in raw["x-app"]["depends_on"]


@needs_compose
def test_every_service_of_the_default_stack_has_a_memory_limit(config):
    """One container cannot take the machine's memory from the others (sizes: docs/operations.md);
    Compose 1.29 honours mem_limit (the docker smoke prints each container's limit)."""
    for name, service in config["services"].items():
        if service.get("profiles"):
            continue
        assert service.get("mem_limit"), f"{name} runs without a mem_limit"
