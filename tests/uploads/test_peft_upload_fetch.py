"""A PEFT upload whose base model must first be fetched from HUB_BASE_MODEL_ENDPOINT: while the
endpoint is down the upload waits (validation delayed, not rejected), then publishes."""

from __future__ import annotations

import io

import pytest

from hub_server.uploads import services

from . import test_basemodel_cache, test_peft_upload
from .conftest import zip_folder
from .test_new_methods import LORA_CONFIG, add_architecture
from .test_peft_upload import save_peft_lora

# the model endpoint and its settings (autouse), and a user of organisation alice-lab
model_root = test_basemodel_cache.model_root
endpoint = test_basemodel_cache.endpoint
fetch_settings = test_basemodel_cache.fetch_settings
alice = test_peft_upload.alice
closed_port_url = test_basemodel_cache.closed_port_url

pytest.importorskip("peft")


@pytest.mark.django_db
def test_a_peft_upload_waits_for_its_base_model_then_publishes(
    alice, tmp_path, settings, endpoint, django_capture_on_commit_callbacks
):
    add_architecture("lora", LORA_CONFIG)
    save_peft_lora(tmp_path / "peft", base_name="org/tiny-bert")
    settings.HUB_BASE_MODEL_ENDPOINT = closed_port_url()
    with django_capture_on_commit_callbacks(execute=True):
        up = services.create_upload(
            user=alice,
            archive=io.BytesIO(zip_folder(tmp_path / "peft")),
            task="sentiment",
            subtask="demo-reviews",
            org="alice-lab",
        )
    up.refresh_from_db()
    assert up.status == "pending" and up.validation_delayed, (up.message, up.report)
    assert "base model org/tiny-bert could not be fetched" in up.message
    settings.HUB_BASE_MODEL_ENDPOINT = endpoint.url
    with django_capture_on_commit_callbacks(execute=True):
        services.validate_upload(up.pk)
    up.refresh_from_db()
    assert up.status == "published", up.report
    peft_check = next(e for e in up.report if e["name"] == "peft")
    assert "PEFT LORA adapter for org/tiny-bert" in peft_check["message"]
