"""The site's probes and the embedded demo catalogue."""

import pytest
from django.core.management import call_command

from hub_server.catalog.models import Adapter, SyncRun


def test_healthz_answers_without_the_database(client):
    # No django_db mark: any query would fail this test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_storage(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"] == "ok"


@pytest.mark.django_db
def test_demo_catalogue_loads_and_reloads_as_a_noop(capsys):
    call_command("load_demo")
    assert "0 errors" in capsys.readouterr().out
    demo = Adapter.objects.get(org="demo", name="bert-base-uncased_sentiment_sst-2_pfeiffer")
    assert demo.identifier == "sentiment/sst-2@demo"
    assert demo.config_hash == "9076f36a74755ac4"
    assert (
        Adapter.objects.get(name="bert-base-uncased_nli_multinli_houlsby").config[
            "reduction_factor"
        ]
        == 8
    )

    call_command("load_demo")
    assert "nothing changed" in capsys.readouterr().out
    assert SyncRun.objects.first().status == SyncRun.Status.NOOP


def test_web_process_does_not_load_torch():
    """Web workers stay small: torch loads only where weights are read (workers, commands)."""
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup(); import hub_server.urls, hub_server.wsgi; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "hub_server.settings"},
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "False"
