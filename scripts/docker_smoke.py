"""`make docker-smoke`: the self-hosted stack of docker-compose.yml built and run for real, offline.

  1. a Docker engine (installed and started when missing: Debian's docker.io, docker-compose,
     debootstrap), base images built from Debian packages (scripts/docker_base_images.sh), a
     wheelhouse (scripts/docker_wheelhouse.sh), the hub and nginx images built with PIP_OFFLINE=1;
  2. the stack up with a throw-away .env under its own compose project, every health check
     passing; then through nginx only: a small Hub repository synced (a bare git repository
     mounted into the containers, a signed webhook), an adapter trained here on a tiny BERT saved
     as `bert-base-uncased` pushed with `adapterhub push --wait` and published, and downloaded
     through /api/v1/, /dist/v2/ and /hf/ with its checksum checked; the validator gets the base
     model from a Hugging-Face-compatible endpoint in a container (scripts/hf_model_endpoint.py,
     when present; else HUB_BASE_MODELS naming a mounted folder);
  3. the whole stack taken down and up again (volumes kept): everything is still served;
  4. a second stack with two web and two worker containers and storage on S3 (moto in server
     mode, on a loopback port for the presigned URLs downloads redirect to): a publish made by
     one worker is served by both web containers;
  5. everything of both projects removed (containers, networks, volumes), whatever happened.

Prints each step with its time, the image sizes and each container's memory at rest.
`--keep` leaves the last stack running for a look (remove it with `--down`).
Images are kept (names start with ahsmoke-) so that a second run reuses every cached layer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The adapter is trained with this checkout's adapters_core, whatever the venv installed.
sys.path.insert(0, str(ROOT))
PREFIX = "ahsmoke"
PROJECTS = (f"{PREFIX}", f"{PREFIX}s3")
APP_IMAGE = f"{PREFIX}-app"
TAG = "smoke"
BASE = {
    "PYTHON_IMAGE": f"{PREFIX}-python:3.11-bookworm",
    "NGINX_IMAGE": f"{PREFIX}-nginx:bookworm",
    "POSTGRES_IMAGE": f"{PREFIX}-postgres:15-bookworm",
    "REDIS_IMAGE": f"{PREFIX}-redis:bookworm",
}
MOTO_IMAGE = f"{PREFIX}-moto:{TAG}"
MODEL_ID = "bert-base-uncased"
ORG, TASK, SUBTASK = "smoke", "sentiment", "sst-2"
WEBHOOK_SECRET = "smoke-webhook-" + secrets.token_hex(8)
HUB_UID = 10001  # the image's user `hub`
ENDPOINT_SCRIPT = ROOT / "scripts" / "hf_model_endpoint.py"
PYTHON = sys.executable

TIMES: list[tuple[str, float]] = []
STARTED = time.monotonic()


class SmokeError(Exception):
    pass


def log(message: str) -> None:
    print(f"[smoke {time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


@contextlib.contextmanager
def step(name: str):
    log(f"--> {name}")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log(f"FAILED {name} after {time.monotonic() - start:.1f}s")
        raise
    took = time.monotonic() - start
    TIMES.append((name, took))
    log(f"ok  {name} ({took:.1f}s)")


def run(cmd, *, timeout=600, check=True, env=None, quiet=False, input=None, cwd=ROOT):
    cmd = [str(c) for c in cmd]
    try:
        result = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise SmokeError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and result.returncode != 0:
        raise SmokeError(
            f"exit {result.returncode}: {' '.join(cmd)}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    if not quiet and result.stderr.strip() and result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return result


def wait_until(condition, what: str, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then shown
            last_error = exc
        time.sleep(interval)
    raise SmokeError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})"
    )


# -- engine ----------------------------------------------------------------------------------------


def docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def ensure_engine() -> None:
    missing = [
        pkg
        for pkg, binary in (("docker.io", "dockerd"), ("docker-compose", "docker-compose"),
                            ("debootstrap", "debootstrap"))
        if not shutil.which(binary) and not Path(f"/usr/sbin/{binary}").exists()
    ]  # fmt: skip
    if missing:
        if os.geteuid() != 0:
            raise SmokeError(f"install {' '.join(missing)} (apt-get) or run as root")
        log(f"installing {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], timeout=600, env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=1200, env=env)  # fmt: skip
    if docker_ok():
        return
    if os.geteuid() != 0:
        raise SmokeError("the Docker engine is not running and this is not root: start dockerd")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    log(f"starting {dockerd} (log: /var/log/{PREFIX}-dockerd.log)")
    logfile = open(f"/var/log/{PREFIX}-dockerd.log", "ab")  # noqa: SIM115 - dockerd keeps it
    subprocess.Popen([dockerd], stdout=logfile, stderr=logfile, start_new_session=True)
    wait_until(docker_ok, "dockerd to answer `docker info`", timeout=120)


# -- images ----------------------------------------------------------------------------------------


def docker_build(dockerfile: str, target: str | None, tag: str, context: str, args: dict, logname):
    cmd = ["docker", "build", "--force-rm", "-f", dockerfile, "-t", tag]
    if target:
        cmd += ["--target", target]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(context)
    logfile = ROOT / "var" / "docker" / f"build-{logname}.log"
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    with open(logfile, "w") as out:
        result = subprocess.run(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=2400, input=None
        )
    if result.returncode != 0:
        tail = logfile.read_text().splitlines()[-40:]
        raise SmokeError(f"building {tag} failed (log: {logfile}):\n" + "\n".join(tail))


def build_images() -> None:
    (ROOT / "var" / "docker").mkdir(parents=True, exist_ok=True)
    with step("base images from Debian packages (debootstrap, docker import, apt-get)"):
        run(["bash", "scripts/docker_base_images.sh", PREFIX], timeout=2400)
    with step("wheelhouse (scripts/docker_wheelhouse.sh)"):
        run(
            ["bash", "scripts/docker_wheelhouse.sh"],
            timeout=1800,
            env={**os.environ, "PYTHON": PYTHON},
        )
    args = {
        "PYTHON_IMAGE": BASE["PYTHON_IMAGE"],
        "NGINX_IMAGE": BASE["NGINX_IMAGE"],
        "PIP_OFFLINE": "1",
    }
    with step("hub image (docker/Dockerfile target app, offline)"):
        docker_build("docker/Dockerfile", "app", f"{APP_IMAGE}:{TAG}", ".", args, "app")
    with step("nginx image (docker/Dockerfile target nginx)"):
        docker_build("docker/Dockerfile", "nginx", f"{APP_IMAGE}-nginx:{TAG}", ".", args, "nginx")
    with step("moto image (S3-compatible server, from the wheelhouse)"):
        dockerfile = ROOT / "var" / "docker" / "moto.Dockerfile"
        dockerfile.write_text(
            f"FROM {BASE['PYTHON_IMAGE']}\n"
            "COPY . /wheels/\n"
            "RUN python -m venv /opt/moto && /opt/moto/bin/pip install --no-index --no-cache-dir "
            "--find-links /wheels 'moto[server]' && rm -rf /wheels\n"
            "EXPOSE 5000\n"
            'CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]\n'
        )
        docker_build(str(dockerfile), None, MOTO_IMAGE, "docker/wheelhouse", {}, "moto")


def image_sizes() -> list[str]:
    out = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}"]).stdout
    return sorted(line for line in out.splitlines() if line.startswith(PREFIX))


# -- inputs: model, adapter, Hub repository --------------------------------------------------------


def make_inputs(work: Path) -> dict:
    import torch
    from transformers import BertConfig, BertModel

    from adapters_core import AutoAdapterModel

    # A tiny random BERT, saved under the id of the catalogue's base model.
    model_dir = work / "models" / MODEL_ID
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(model_dir)

    adapter_dir = work / "adapter"
    model = AutoAdapterModel.from_pretrained(str(model_dir))
    model.config._name_or_path = MODEL_ID
    model.add_adapter("smoke", config="seq_bn")
    model.add_classification_head("smoke", num_labels=2)
    model.train_adapter("smoke")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 1000, (4, 10))
    labels = torch.tensor([0, 1, 0, 1])
    for _ in range(3):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_adapter(str(adapter_dir), "smoke", with_head=True)

    # The small Hub repository: the demo catalogue's files in a bare repository.
    source = work / "hub-src"
    shutil.copytree(ROOT / "hub_server" / "catalog" / "demo_hub", source)
    git = ["git", "-c", "user.name=smoke", "-c", "user.email=smoke@example.invalid"]
    run([*git, "init", "-q", "-b", "main", str(source)])
    run([*git, "-C", str(source), "add", "-A"])
    run([*git, "-C", str(source), "commit", "-q", "-m", "small hub for the docker smoke"])
    bare = work / "hub-repo" / "hub.git"
    run(["git", "clone", "-q", "--bare", str(source), str(bare)])
    for path in [work / "hub-repo", *(work / "hub-repo").rglob("*")]:
        os.chown(path, HUB_UID, HUB_UID)
    for path in [work, work / "models", *(work / "models").rglob("*")]:
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else path.stat().st_mode | 0o644)
    return {"model_dir": model_dir, "adapter_dir": adapter_dir, "hub_repo": work / "hub-repo"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- one stack -------------------------------------------------------------------------------------


class Stack:
    def __init__(self, project: str, work: Path, inputs: dict, *, s3: bool, replicas: int):
        self.project, self.work, self.inputs, self.s3, self.replicas = (
            project, work, inputs, s3, replicas,
        )  # fmt: skip
        self.port = free_port()
        # S3 downloads are redirects to presigned URLs: the client reaches moto on loopback.
        self.s3_port = free_port() if s3 else None
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = work / project
        self.dir.mkdir()
        self.env_file = self.dir / ".env"
        self.override = self.dir / "docker-compose.smoke.yml"
        self.endpoint = ENDPOINT_SCRIPT.exists()
        self._write_env()
        self._write_override()

    def _write_env(self) -> None:
        values = {
            "DJANGO_SECRET_KEY": secrets.token_hex(32),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_CSRF_TRUSTED_ORIGINS": self.url,
            "HUB_PUBLIC_URL": self.url,
            "HUB_HTTP_BIND": "127.0.0.1",
            "HUB_HTTP_PORT": str(self.port),
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_HSTS_SECONDS": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "HUB_REPO_URL": "file:///srv/hub-repo/hub.git",
            "HUB_REPO_BRANCH": "main",
            "HUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "HUB_IMAGE": APP_IMAGE,
            "HUB_IMAGE_TAG": TAG,
            **BASE,
            "PIP_OFFLINE": "1",
            "GUNICORN_WORKERS": "2",
        }
        if self.s3:
            values.update({
                "HUB_STORAGE": "s3",
                "AWS_STORAGE_BUCKET_NAME": "adapterhub-smoke",
                "AWS_S3_ENDPOINT_URL": "http://moto:5000",
                "AWS_ACCESS_KEY_ID": "smoke",
                "AWS_SECRET_ACCESS_KEY": "smoke-" + secrets.token_hex(8),
                "AWS_S3_REGION_NAME": "us-east-1",
                "HUB_S3_PUBLIC_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            })  # fmt: skip
        self.values = values
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def _write_override(self) -> None:
        """What only the smoke adds: the Hub repository and the base model's source mounted, the
        endpoint (and moto) as services. Lines of YAML, written as JSON (a subset of YAML)."""
        app_env = {}
        models = str(self.inputs["model_dir"].parent)
        if self.endpoint:
            app_env["HUB_BASE_MODEL_ENDPOINT"] = "http://hf-endpoint:8080"
        else:
            app_env["HUB_BASE_MODELS"] = json.dumps({MODEL_ID: f"/srv/models/{MODEL_ID}"})
        app = {
            "environment": app_env,
            "volumes": [f"{self.inputs['hub_repo']}:/srv/hub-repo:ro", f"{models}:/srv/models:ro"],
        }
        services: dict = {"web": dict(app), "worker": dict(app), "beat": dict(app)}
        depends = {}
        if self.endpoint:
            services["hf-endpoint"] = {
                "image": BASE["PYTHON_IMAGE"],
                "command": [
                    "python",
                    "/srv/hf_model_endpoint.py",
                    "/srv/models",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    "8080",
                ],  # fmt: skip
                "volumes": [
                    f"{ENDPOINT_SCRIPT}:/srv/hf_model_endpoint.py:ro",
                    f"{models}:/srv/models:ro",
                ],  # fmt: skip
                "healthcheck": {
                    "test": [
                        "CMD",
                        "python",
                        "-c",
                        "import urllib.request; urllib.request."
                        f"urlopen('http://127.0.0.1:8080/api/models/{MODEL_ID}')",
                    ],
                    "interval": "5s",
                    "timeout": "5s",
                    "retries": 10,
                },  # fmt: skip
                "mem_limit": "256m",
            }
            depends["hf-endpoint"] = {"condition": "service_healthy"}
        if self.s3:
            services["moto"] = {
                "image": MOTO_IMAGE,
                "ports": [f"127.0.0.1:{self.s3_port}:5000"],
                "healthcheck": {
                    "test": [
                        "CMD",
                        "/opt/moto/bin/python",
                        "-c",
                        "import urllib.request; "
                        "urllib.request.urlopen('http://127.0.0.1:5000/moto-api/')",
                    ],
                    "interval": "5s",
                    "timeout": "5s",
                    "retries": 20,
                },  # fmt: skip
                "mem_limit": "512m",
            }
            depends["moto"] = {"condition": "service_healthy"}
        if depends:
            for name in ("web", "worker", "beat"):
                services[name]["depends_on"] = {
                    "postgres": {"condition": "service_healthy"},
                    "redis": {"condition": "service_healthy"},
                    "redis-cache": {"condition": "service_healthy"},
                    **depends,
                }
        self.override.write_text(json.dumps({"services": services}, indent=2))

    # compose with nothing of this shell's environment but what it needs (a variable set here
    # would win over the throw-away .env)
    def compose(self, *args, timeout=900, check=True):
        env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "DOCKER_HOST"}}
        env["COMPOSE_HTTP_TIMEOUT"] = "300"
        cmd = ["docker-compose", "--project-name", self.project, "--project-directory", ROOT,
               "--env-file", self.env_file, "-f", ROOT / "docker-compose.yml", "-f", self.override,
               *args]  # fmt: skip
        return run(cmd, timeout=timeout, check=check, env=env)

    def containers(self) -> list[str]:
        ids = self.compose("ps", "-q").stdout.split()
        if not ids:
            return []
        out = run(["docker", "inspect", "-f", "{{.Name}}", *ids]).stdout
        return sorted(name.lstrip("/") for name in out.split())

    def health(self) -> dict[str, str]:
        names = self.containers()
        if not names:
            return {}
        fmt = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        out = run(["docker", "inspect", "-f", fmt, *names]).stdout
        states = {}
        for line in out.splitlines():
            name, status, *health = line.split()
            states[name.lstrip("/")] = health[0] if health else status
        return states

    def up(self) -> None:
        scale = ["--scale", f"web={self.replicas}", "--scale", f"worker={self.replicas}"]
        if self.s3:
            # The bucket first: /readyz checks the storage, so web is healthy only with it.
            self.compose("up", "-d", "--no-build", "moto")
            wait_until(lambda: self.health().get(f"{self.project}_moto_1") == "healthy",
                       "moto to be healthy", timeout=120)  # fmt: skip
            self.compose("run", "--rm", "--no-deps", "-T", "web", "python", "-c",
                         "import boto3, os; boto3.client('s3', endpoint_url=os.environ["
                         "'AWS_S3_ENDPOINT_URL']).create_bucket(Bucket=os.environ["
                         "'AWS_STORAGE_BUCKET_NAME'])", timeout=300)  # fmt: skip
        result = self.compose("up", "-d", "--no-build", *scale, timeout=1200, check=False)
        if result.returncode != 0:
            raise SmokeError(f"compose up failed:\n{result.stderr[-3000:]}\n{self.logs()}")
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 600) -> None:
        expected = 7 + (2 * (self.replicas - 1)) + self.endpoint + self.s3

        def all_healthy():
            states = self.health()
            bad = {n: s for n, s in states.items() if s != "healthy"}
            if any(s in {"unhealthy", "exited", "dead"} for s in bad.values()):
                raise SmokeError(f"not healthy: {bad}\n{self.logs()}")
            return len(states) >= expected and not bad

        try:
            wait_until(all_healthy, f"every container of {self.project} to be healthy", timeout)
        except SmokeError as exc:
            if "not healthy" in str(exc):
                raise
            raise SmokeError(f"{exc}\nstates: {self.health()}\n{self.logs()}") from None

    def logs(self, service: str | None = None, tail: int = 60) -> str:
        args = ["logs", "--no-color", "--tail", str(tail)] + ([service] if service else [])
        result = self.compose(*args, check=False, timeout=120)
        return result.stdout[-12000:]

    def down(self, volumes: bool) -> None:
        self.compose("down", "--remove-orphans", *(["-v"] if volumes else []), timeout=300,
                     check=False)  # fmt: skip

    def manage(self, *args) -> str:
        return self.compose("exec", "-T", "web", "python", "manage.py", *args, timeout=300).stdout

    def memory(self) -> list[str]:
        names = self.containers()
        out = run(["docker", "stats", "--no-stream", "--format",
                   "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}", *names], timeout=120).stdout  # fmt: skip
        return sorted(out.splitlines())

    def mem_limits(self) -> dict[str, int]:
        names = self.containers()
        out = run(["docker", "inspect", "-f", "{{.Name}} {{.HostConfig.Memory}}", *names]).stdout
        return {n.lstrip("/"): int(m) for n, m in (line.split() for line in out.splitlines())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what the smoke checks, all over HTTP through nginx ---------------------------------------------


def http(stack: Stack, method: str, path: str, expect=200, **kwargs):
    import requests

    url = path if path.startswith("http") else stack.url + path
    response = requests.request(method, url, timeout=60, **kwargs)
    if response.status_code != expect:
        raise SmokeError(f"{method} {url}: {response.status_code} {response.text[:500]}")
    return response


def sync(stack: Stack) -> dict:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    http(stack, "POST", "/api/v1/sync/", expect=202, data=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-Hub-Signature-256": f"sha256={signature}",
    })  # fmt: skip

    def done():
        runs = http(stack, "GET", "/api/v1/sync/runs/").json()["results"]
        failed = [r for r in runs if r["status"] == "failed"]
        if failed:
            raise SmokeError(f"the sync failed: {failed[0]}")
        return next((r for r in runs if r["status"] == "succeeded"), None)

    run_ = wait_until(done, "the webhook's sync to succeed", timeout=300)
    count = http(stack, "GET", "/api/v1/adapters/").json()["count"]
    if not count:
        raise SmokeError("the sync succeeded but no adapter is listed")
    log(f"synced commit {run_.get('commit', '')[:12]}: {count} adapters")
    return run_


def push(stack: Stack, name: str, work: Path) -> str:
    token = stack.manage("create_token", "smoker", "--org", ORG, "--write").split()[-1]
    env = {
        **os.environ,
        "ADAPTERHUB_URL": stack.url,
        "ADAPTERHUB_TOKEN": token,
        "XDG_CONFIG_HOME": str(work / "config"),
        "PYTHONPATH": str(ROOT / "clients" / "adapterhub-cli"),
    }
    result = run([PYTHON, "-m", "adapterhub_cli", "push", stack.inputs["adapter_dir"],
                  "--task", TASK, "--subtask", SUBTASK, "--org", ORG, "--name", name,
                  "--version", "1", "--wait", "--timeout", "600"],
                 env=env, timeout=900, check=False)  # fmt: skip
    print(result.stdout.rstrip())
    if result.returncode != 0 or "status: published" not in result.stdout:
        raise SmokeError(
            f"adapterhub push exited {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
            f"\n--- worker logs\n{stack.logs('worker', 120)}"
        )
    return token


def downloads(stack: Stack, name: str) -> dict:
    """The adapter through the three faces, each checked against the sha256 the API states and
    the files pushed."""
    detail = http(stack, "GET", f"/api/v1/adapters/{ORG}/{name}/").json()
    (version,) = detail["versions"]
    expected = version["sha256"]
    archive = http(stack, "GET", f"/api/v1/adapters/{ORG}/{name}/versions/1/download").content
    if sha256(archive) != expected:
        raise SmokeError(f"/api/v1/ download: sha256 {sha256(archive)} != {expected}")
    dist = http(stack, "GET", f"/dist/v2/adapters/{ORG}/{name}.json").json()
    entry = dist["files"]["1"]
    if not entry["url"].startswith(stack.url):
        raise SmokeError(f"/dist/v2/ points outside the hub: {entry['url']}")
    dist_archive = http(stack, "GET", entry["url"]).content
    if sha256(dist_archive) != entry["sha256"] or entry["sha256"] != expected:
        raise SmokeError(f"/dist/v2/ download: {sha256(dist_archive)}, listed {entry['sha256']}")
    index = http(stack, "GET", f"/dist/v2/index/{MODEL_ID}.json").json()
    if f"adapters/{ORG}/{name}.json" not in json.dumps(index):
        raise SmokeError(f"/dist/v2/index/{MODEL_ID}.json does not list {ORG}/{name}")
    info = http(stack, "GET", f"/hf/api/models/{ORG}/{name}").json()
    siblings = {s["rfilename"] for s in info["siblings"]}
    pushed = {p.name: p.read_bytes() for p in stack.inputs["adapter_dir"].iterdir()}
    compared = 0
    for filename, data in pushed.items():
        if filename not in siblings:
            continue
        served = http(stack, "GET", f"/hf/{ORG}/{name}/resolve/main/{filename}").content
        if sha256(served) != sha256(data):
            raise SmokeError(f"/hf/ {filename}: the bytes differ from the pushed file")
        compared += 1
    if "adapter_config.json" not in siblings or compared < 2:
        raise SmokeError(f"/hf/ lists {sorted(siblings)}; pushed {sorted(pushed)}")
    log(f"downloads: {len(archive)} bytes, sha256 {expected[:16]}..., /hf/ files {compared}/"
        f"{len(pushed)} identical")  # fmt: skip
    return {"sha256": expected, "hf_files": sorted(siblings), "info_sha": info.get("sha")}


def observe(stack: Stack, name: str, token: str) -> dict:
    """What must survive a restart, as seen over HTTP."""

    def without_counts(value):
        if isinstance(value, dict):
            return {k: without_counts(v) for k, v in value.items() if k != "downloads"}
        if isinstance(value, list):
            return [without_counts(v) for v in value]
        return value

    auth = {"Authorization": f"Bearer {token}"}
    uploads = http(stack, "GET", "/api/v1/uploads/", headers=auth).json()
    if isinstance(uploads, dict):  # paginated or not
        uploads = uploads["results"]
    return {
        "adapters": http(stack, "GET", "/api/v1/adapters/?page_size=100").json()["count"],
        "detail": without_counts(http(stack, "GET", f"/api/v1/adapters/{ORG}/{name}/").json()),
        "downloads": downloads(stack, name),
        "uploads": [(u["id"], u["status"]) for u in uploads],
        "runs": [(r["id"], r["status"], r["commit"])
                 for r in http(stack, "GET", "/api/v1/sync/runs/").json()["results"]],
    }  # fmt: skip


# -- the smoke -------------------------------------------------------------------------------------


def report_memory(stack: Stack, label: str) -> None:
    limits = stack.mem_limits()
    log(f"memory at rest, {label} (docker stats --no-stream; limit from mem_limit):")
    for line in stack.memory():
        name = line.split("\t")[0]
        limit = limits.get(name, 0)
        print(f"    {line}\tmem_limit {limit / 2**20:.0f} MiB" if limit else f"    {line}")
    if not all(limits.get(n) for n in limits if not n.endswith(("hf-endpoint_1", "moto_1"))):
        raise SmokeError(f"a container runs without a memory limit: {limits}")


def single(work: Path, inputs: dict) -> None:
    stack = Stack(PROJECTS[0], work, inputs, s3=False, replicas=1)
    STACKS.append(stack)
    source = "endpoint (scripts/hf_model_endpoint.py)" if stack.endpoint else "HUB_BASE_MODELS"
    log(f"stack {stack.project} at {stack.url}; base model from the {source}")
    with step("stack up: every health check passing"):
        stack.up()
    log("containers: " + ", ".join(f"{n}={s}" for n, s in sorted(stack.health().items())))
    report_memory(stack, "one of each")
    with step("sync a small Hub repository through nginx (signed webhook)"):
        sync(stack)
    name = "tiny-bert-sst2"
    with step("adapterhub push --wait: validated and published"):
        token = push(stack, name, work)
    if stack.endpoint:
        with step("the worker fetched the base model from the endpoint into its cache"):
            cached = stack.compose("exec", "-T", "worker", "python", "manage.py", "base_models",
                                   "list", timeout=300).stdout  # fmt: skip
            print(cached.rstrip())
            if MODEL_ID not in cached:
                raise SmokeError(f"{MODEL_ID} is not in the worker's base-model cache:\n{cached}")
    with step("download through /api/v1/, /dist/v2/ and /hf/ with checksums"):
        before = observe(stack, name, token)
    with step("restart the whole stack (down, up; volumes kept)"):
        stack.down(volumes=False)
        stack.up()
    with step("everything survived the restart"):
        after = observe(stack, name, token)
        # beat may have added sync runs since: the history before must be intact.
        runs_before, runs_after = before.pop("runs"), after.pop("runs")
        if not set(runs_before) <= set(runs_after):
            raise SmokeError(f"sync history lost: before {runs_before}, after {runs_after}")
        if after != before:
            raise SmokeError(f"changed by the restart:\nbefore {before}\nafter  {after}")
    if not ARGS.keep:
        with step(f"tear down {stack.project}"):
            stack.down(volumes=True)


def scaled(work: Path, inputs: dict) -> None:
    stack = Stack(PROJECTS[1], work, inputs, s3=True, replicas=2)
    STACKS.append(stack)
    log(f"stack {stack.project} at {stack.url}: 2 web, 2 workers, storage on S3 (moto)")
    with step("scaled stack up on S3: every health check passing"):
        stack.up()
    report_memory(stack, "two web, two workers, S3")
    with step("sync through nginx"):
        sync(stack)
    name = "tiny-bert-sst2-s3"
    with step("push: published by one of the two workers"):
        push(stack, name, work)
        ran = {}
        for container in (c for c in stack.containers() if "_worker_" in c):
            text = run(["docker", "logs", container], check=False)
            ran[container] = sum(
                "validate_upload_task[" in line and "succeeded" in line
                for line in (text.stdout + text.stderr).splitlines()
            )
        log(f"validations run per worker container: {ran}")
        if sum(ran.values()) < 1:
            raise SmokeError(f"no worker logged the validation: {ran}")
    with step("the bytes are in the bucket, not on the volume"):
        listing = stack.compose("exec", "-T", "web", "python", "-c",
                                "import boto3, os; print([o['Key'] for o in boto3.client('s3', "
                                "endpoint_url=os.environ['AWS_S3_ENDPOINT_URL']).list_objects_v2("
                                "Bucket=os.environ['AWS_STORAGE_BUCKET_NAME']).get('Contents', "
                                "[])])").stdout  # fmt: skip
        keys = json.loads(listing.strip().splitlines()[-1].replace("'", '"'))
        if not keys:
            raise SmokeError("nothing stored in the S3 bucket after a publish")
        log(f"bucket holds {len(keys)} objects, e.g. {keys[0]}")
    with step("both web containers serve the publish (through nginx)"):
        webs = [c for c in stack.containers() if "_web_" in c]
        if len(webs) != 2:
            raise SmokeError(f"expected two web containers, found {webs}")
        path = f"/api/v1/adapters/{ORG}/{name}/versions/1/download"
        served = dict.fromkeys(webs, 0)
        expected = http(stack, "GET", f"/api/v1/adapters/{ORG}/{name}/").json()["versions"][0]
        for attempt in range(40):
            response = http(stack, "GET", path)
            data = response.content
            if attempt == 0:
                hops = [f"{r.status_code} {r.headers.get('Location', '')[:60]}" for r in
                        response.history]  # fmt: skip
                log(
                    f"download answered by the web with {hops or 'the bytes'}, then {response.url[:60]}"
                )
                if not response.history:
                    raise SmokeError("with S3 a download must be a redirect to a presigned URL")
            if sha256(data) != expected["sha256"]:
                raise SmokeError(f"download {attempt}: sha256 differs from the API's")
            for web in webs:
                text = run(["docker", "logs", web], check=False)
                served[web] = (text.stdout + text.stderr).count(path)
            if all(served.values()) and attempt >= 3:
                break
        log(f"downloads answered per web container: {served}")
        if not all(served.values()):
            raise SmokeError(f"not every web container served the adapter: {served}")
        downloads(stack, name)
    if not ARGS.keep:
        with step(f"tear down {stack.project}"):
            stack.down(volumes=True)


STACKS: list[Stack] = []
ARGS = argparse.Namespace(keep=False)


def teardown() -> None:
    for stack in STACKS:
        with contextlib.suppress(Exception):
            stack.down(volumes=True)


def down_only() -> None:
    """Remove whatever an earlier (kept or interrupted) run left: containers, networks, volumes of
    the smoke's own compose projects, and nothing else."""
    for project in PROJECTS:
        for kind, filt in (("container", "label=com.docker.compose.project="),
                           ("volume", "label=com.docker.compose.project="),
                           ("network", "label=com.docker.compose.project=")):  # fmt: skip
            ids = run(["docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []),
                       "--filter", filt + project], check=False).stdout.split()  # fmt: skip
            if ids:
                force = ["-f"] if kind == "container" else []
                run(["docker", kind, "rm", *force, *ids], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the last stack running")
    parser.add_argument("--down", action="store_true", help="only remove what a run left")
    parser.add_argument("--skip-single", action="store_true", help="only the scaled S3 stack")
    global ARGS
    ARGS = parser.parse_args()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    with step("Docker engine (installed and started when missing)"):
        ensure_engine()
    down_only()
    if ARGS.down:
        return 0
    ok = False
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    try:
        build_images()
        log("image sizes:")
        for line in image_sizes():
            print(f"    {line}")
        with step("inputs: a tiny BERT as bert-base-uncased, an adapter trained on it, a Hub repo"):
            inputs = make_inputs(work)
        if not ARGS.skip_single:
            single(work, inputs)
        scaled(work, inputs)
        ok = True
    except SmokeError as exc:
        log(f"SMOKE FAILED: {exc}")
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc})")
    except Exception:  # a bug of the smoke itself: still torn down below
        import traceback

        traceback.print_exc()
        log("SMOKE FAILED with the error above")
    finally:
        if not (ARGS.keep and ok):
            with step("tear down every smoke stack (containers, networks, volumes)"):
                teardown()
                down_only()
        shutil.rmtree(work, ignore_errors=True)
    log("step times:")
    for name, took in TIMES:
        print(f"    {took:7.1f}s  {name}")
    log(f"{'PASSED' if ok else 'FAILED'} in {time.monotonic() - STARTED:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
