"""The production settings, as docker-compose.yml and scripts/stack/ set them: `check --deploy`
raises no security warning, and the HTTPS hardening follows the environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import warnings

import pytest

from tests.conftest import ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "hub.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://hub.example.org",
    "DJANGO_BEHIND_PROXY": "1",
}


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "hub_server.settings", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_deploy_is_clean_with_the_production_settings(tmp_path):
    env = {**PRODUCTION, "HUB_VAR_DIR": str(tmp_path / "var")}
    result = run_django(env, "manage.py", "check", "--deploy")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    issues = [line for line in output.splitlines() if line.startswith("?: (")]
    security = [line for line in issues if "(security." in line]
    assert security == []
    others = [line for line in issues if "(security." not in line]
    if others:  # owned by the apps that raise them; shown, not failed on here
        warnings.warn(f"check --deploy: {len(others)} other warning(s): {others[0]}", stacklevel=1)


SHOW = (
    "from django.conf import settings as s; "
    "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.DEBUG)"
)


@pytest.mark.parametrize(
    "env, expected",
    [
        (PRODUCTION, "True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') False"),
        (
            {
                **PRODUCTION,
                "DJANGO_BEHIND_PROXY": "0",
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DJANGO_SECURE_HSTS_SECONDS": "0",
                "DJANGO_SECURE_COOKIES": "0",
            },
            "False 0 False False None False",
        ),
        ({}, "False 0 False False None True"),
    ],
    ids=["production", "plain-http-stack", "development"],
)
def test_https_hardening_follows_the_environment(tmp_path, env, expected):
    script = f"import django; django.setup(); {SHOW}"
    result = run_django({**env, "HUB_VAR_DIR": str(tmp_path / "var")}, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path):
    env = {"DJANGO_DEBUG": "0", "HUB_VAR_DIR": str(tmp_path / "var")}
    result = run_django(env, "-c", "import django; django.setup()")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
