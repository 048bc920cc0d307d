"""HTTPS in front of the hub: docker/caddy/Caddyfile run by Debian's Caddy as a real process, in
front of docker/nginx's config (Debian's nginx) in front of the production-style stack, as the
compose profile `tls` runs them. HTTPS answers with a certificate of Caddy's own CA, plain HTTP is
redirected, the hub sees https behind two proxies (HSTS, absolute links, no redirect loop) even
when a client lies in X-Forwarded-Proto or X-Forwarded-For, and a download arrives whole."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from tests.conftest import ROOT, SNAPSHOT, make_git_repo
from tests.deploy.stack import LocalNginx, LocalStack
from tests.deploy.test_compose import ENV_EXAMPLE, compose_config, needs_compose
from tests.deploy.test_stack import free_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
CADDYFILE = ROOT / "docker" / "caddy" / "Caddyfile"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_caddy = pytest.mark.skipif(
    not os.path.exists(CADDY), reason="caddy is not installed (apt-get install caddy)"
)


class LocalCaddy:
    """docker/caddy/Caddyfile, unchanged, with Caddy's internal CA, on free ports."""

    def __init__(self, folder, upstream: str):
        self.folder = folder
        self.https_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        self.url = f"https://localhost:{self.https_port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "CADDY_"))},
            "HOME": str(folder),
            "XDG_DATA_HOME": str(folder / "data"),
            "XDG_CONFIG_HOME": str(folder / "config"),
            "HUB_TLS_DOMAIN": "localhost",
            "HUB_TLS_ACME": "internal",
            "HUB_TLS_UPSTREAM": upstream,
            "CADDY_HTTP_PORT": str(self.http_port),
            "CADDY_HTTPS_PORT": str(self.https_port),
            "CADDY_HEALTH_PORT": str(self.health_port),
        }
        self.root_certificate = (
            folder / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        )
        self.process: subprocess.Popen | None = None

    def command(self, verb: str) -> list[str]:
        return [CADDY, verb, "--config", str(CADDYFILE), "--adapter", "caddyfile"]

    def start(self, timeout: float = 30) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = (self.folder / "caddy.log").open("wb")
        self.process = subprocess.Popen(
            self.command("run"), env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("caddy exited:\n" + (self.folder / "caddy.log").read_text())
            if self.root_certificate.exists():
                try:
                    requests.get(
                        self.url + "/healthz", verify=str(self.root_certificate), timeout=5
                    )
                    return
                except requests.RequestException:
                    pass
            time.sleep(0.3)
        raise AssertionError("caddy did not answer:\n" + (self.folder / "caddy.log").read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.log.close()


@needs_caddy
def test_the_caddyfile_is_valid_for_debians_caddy(tmp_path):
    caddy = LocalCaddy(tmp_path, upstream="127.0.0.1:8080")
    result = subprocess.run(
        caddy.command("validate"), env=caddy.env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


@needs_compose
def test_the_tls_profile_puts_caddy_in_front_of_nginx():
    result = compose_config(ENV_EXAMPLE, "--profile", "tls")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    caddy = config["services"]["caddy"]
    assert caddy["build"]["context"].endswith("docker/caddy")
    assert caddy["environment"]["HUB_TLS_UPSTREAM"] == "nginx:8080"
    assert "nginx" in caddy["depends_on"]
    # docker-compose 1.29 prints ports as "host:container[/proto]" strings.
    targets = {
        str(p["target"]) if isinstance(p, dict) else p.split(":")[-1] for p in caddy["ports"]
    }
    assert {t.split("/")[0] for t in targets} == {"80", "443"}
    assert caddy["healthcheck"]["test"]
    mounts = {m["target"] if isinstance(m, dict) else m.split(":")[1] for m in caddy["volumes"]}
    assert mounts == {"/data", "/config"}, "certificates and the ACME account persist"
    # Only with the profile: a plain `up` keeps serving HTTP on nginx alone.
    assert caddy["profiles"] == ["tls"]


@pytest.fixture
def served(tmp_path):
    """The stack as compose runs it (behind proxies, HTTPS enforced), a published adapter, nginx,
    and Caddy in front."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    repo = make_git_repo(SNAPSHOT, tmp_path / "hub-repo")
    stack = LocalStack(
        tmp_path / "stack",
        port=free_port(),
        db_name=f"adapterhub_tls_{os.getpid()}",
        redis_db=12,
        env={
            "HUB_ACCEL_REDIRECT_PREFIX": "/_files",
            "DJANGO_BEHIND_PROXY": "1",
            "DJANGO_SECURE_SSL_REDIRECT": "1",
            "DJANGO_SECURE_HSTS_SECONDS": "31536000",
            "DJANGO_SECURE_COOKIES": "1",
            "HUB_TRUSTED_PROXIES": "2",
            "API_THROTTLE_ANON": "30/min",
            "HUB_REPO_URL": str(repo),
            "HUB_REPO_BRANCH": "main",
        },
    )
    nginx = LocalNginx(stack, port=free_port(), nginx=NGINX)
    caddy = LocalCaddy(tmp_path / "caddy", upstream=f"127.0.0.1:{nginx.port}")
    stack.create_database()
    stack.flush_redis()
    try:
        stack.start()
        stack.wait_ready()
        stack.manage("sync_hub")
        from tests.hosting.conftest import make_adapter_folder

        folder = make_adapter_folder(tmp_path / "adapter", seed=5)
        stack.manage(
            "publish_adapter", str(folder), "--task", "sentiment", "--subtask", "sst-2",
            "--org", "tlstest", "--name", "tiny", "--version", "1",
        )  # fmt: skip
        nginx.start()
        caddy.start()
        yield stack, caddy
    finally:
        caddy.stop()
        nginx.stop()
        stack.stop()
        stack.drop_database()
        stack.flush_redis()


@needs_caddy
@pytest.mark.slow
def test_https_through_caddy_and_nginx(served):
    stack, caddy = served
    verify = str(caddy.root_certificate)
    detail_path = "/api/v1/adapters/tlstest/tiny/"

    # HTTPS answers, with a certificate for the host name from Caddy's CA (verified here).
    detail = requests.get(caddy.url + detail_path, verify=verify, timeout=30)
    assert detail.status_code == 200, detail.text
    # The hub saw https through two proxies: it sends HSTS only on secure requests, and builds
    # absolute links with the scheme and host the client used.
    assert detail.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    page = requests.get(caddy.url + "/api/v1/adapters/?page_size=1", verify=verify, timeout=30)
    assert page.json()["next"].startswith(f"{caddy.url}/api/v1/adapters/?")

    # A client's own X-Forwarded-Proto is replaced by Caddy: no redirect loop, no downgrade.
    lying = requests.get(
        caddy.url + detail_path, headers={"X-Forwarded-Proto": "http"}, verify=verify, timeout=30
    )
    assert lying.status_code == 200
    assert "Strict-Transport-Security" in lying.headers

    # Plain HTTP is redirected to HTTPS by Caddy, whatever the client claims.
    plain = requests.get(
        f"http://localhost:{caddy.http_port}{detail_path}",
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=30,
    )
    assert plain.status_code in (301, 308)
    # (to the default HTTPS port: behind compose's port mapping Caddy listens on 443)
    assert plain.headers["Location"] == f"https://localhost{detail_path}"
    # Without the CA, a client refuses the certificate (it is not a public one).
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(caddy.url + detail_path, timeout=30)

    # A download crosses Caddy and nginx's X-Accel-Redirect whole.
    (version,) = detail.json()["versions"]
    archive = requests.get(
        f"{caddy.url}{detail_path}versions/1/download", verify=verify, timeout=60
    )
    assert archive.status_code == 200
    assert hashlib.sha256(archive.content).hexdigest() == version["sha256"]

    # The client address is Caddy's view of it: a client that writes its own X-Forwarded-For
    # cannot pose as someone new to escape the anonymous API throttle (30/min here).
    statuses = [
        requests.get(
            # (a new search each time: a cached page is answered before any throttle)
            f"{caddy.url}/api/v1/adapters/?page_size=1&q=probe{i}",
            headers={"X-Forwarded-For": f"10.0.{i}.1"},
            verify=verify,
            timeout=30,
        ).status_code
        for i in range(32)
    ]
    assert 429 in statuses, statuses

    # The container's health check.
    health = requests.get(f"http://127.0.0.1:{caddy.health_port}/caddy-health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"
