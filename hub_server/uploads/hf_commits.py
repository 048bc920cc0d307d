"""A Hugging Face Hub commit (huggingface_hub's `create_commit`, `upload_folder`, adapters'
`push_adapter_to_hub`) as an upload: the same checks, the same worker, the same publishing.

The files of the repo at the commit are the files of its current default version (if the repo is
published) with the commit's deletions and additions applied. The README.md among them is the
card: its YAML front matter gives the task and subtask (tags `task:<task>` and `subtask:<subtask>`,
or a subtask whose Hugging Face dataset is in `datasets`), the base model and the description.
The other files become the zip a CLI upload sends; a rejected commit publishes nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.conf import settings

from hub_server import storage
from hub_server.catalog.models import Adapter, AdapterVersion, Subtask
from hub_server.uploads.models import Upload
from hub_server.uploads.services import UploadRefused, create_upload, resolve_organisation

README = "README.md"
# Written by git clients and by the Hub itself, never part of an adapter folder.
IGNORED = {".gitattributes", ".gitignore"}
# The clients' default commit messages: not worth a version description.
DEFAULT_SUMMARIES = {"Upload folder using huggingface_hub", "Upload model", "add model"}
HOW_TO_GIVE_TASK = (
    "give it in README.md's YAML front matter as the tags `task:<task>` and `subtask:<subtask>` "
    "(push_adapter_to_hub(..., adapter_card_kwargs={'tags': ['task:sentiment', "
    "'subtask:sst-2']})), or as a `datasets:` entry that is the Hugging Face dataset of a subtask "
    "(push_adapter_to_hub(..., datasets_tag=...))"
)


@dataclass
class Commit:
    """A parsed NDJSON commit body."""

    summary: str = ""
    description: str = ""
    parent: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    deleted_files: list[str] = field(default_factory=list)
    deleted_folders: list[str] = field(default_factory=list)


def parse_commit(body: bytes) -> Commit:
    """The NDJSON lines of POST /api/models/{repo}/commit/{rev}: a header, then one operation a
    line (`file` with base64 content, `deletedFile`, `deletedFolder`; `lfsFile` is refused: this
    hub answers the preupload with the inline mode only)."""
    commit = Commit()
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise UploadRefused("the commit body is empty: expected NDJSON lines, a header first")
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, TypeError, KeyError):
            raise UploadRefused(
                f"line {number} of the commit is not a JSON object with key and value"
            ) from None
        if not isinstance(value, dict):
            raise UploadRefused(f"line {number} of the commit: value must be an object")
        if number == 1:
            if key != "header":
                raise UploadRefused("the first line of the commit must be its header")
            commit.summary = str(value.get("summary") or "")
            commit.description = str(value.get("description") or "")
            commit.parent = value.get("parentCommit")
            continue
        path = str(value.get("path") or "").strip("/")
        if not path:
            raise UploadRefused(f"line {number} of the commit has no path")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise UploadRefused(f"{path}: only base64 file content is supported")
            try:
                commit.files[path] = base64.b64decode(value.get("content") or "", validate=True)
            except (binascii.Error, ValueError):
                raise UploadRefused(f"{path}: the content is not valid base64") from None
        elif key == "lfsFile":
            raise UploadRefused(
                f"{path}: this hub takes files inline in the commit (the preupload answers "
                "'regular'); LFS and Xet uploads are not supported",
                400,
            )
        elif key == "deletedFile":
            commit.deleted_files.append(path)
        elif key == "deletedFolder":
            commit.deleted_folders.append(path.rstrip("/") + "/")
        else:
            raise UploadRefused(f"line {number} of the commit: unknown operation {key!r}")
    return commit


# -- the repo's files ----------------------------------------------------------------------------


def published_adapter(org: str, name: str) -> Adapter | None:
    return (
        Adapter.objects.select_related("task", "subtask")
        .exclude(status=Adapter.Status.WITHDRAWN)
        .filter(org=org, name=name)
        .first()
    )


def default_version(adapter: Adapter | None) -> AdapterVersion | None:
    if adapter is None:
        return None
    versions = adapter.versions.filter(file_status=AdapterVersion.FileStatus.HOSTED).exclude(
        storage_key=""
    )
    return (
        versions.filter(version=adapter.default_version).first()
        or versions.order_by("-position", "-id").first()
    )


def current_files(version: AdapterVersion | None) -> dict[str, bytes]:
    if version is None:
        return {}
    return {
        f.path: b"".join(storage.iter_blob(f.storage_key))
        for f in version.files.all()
        if f.path != README
    }


def other_format(path: str) -> str | None:
    """The same weights in the other format save_adapter writes: `x.safetensors` and
    `pytorch_x.bin` (the hub serves both; a commit of one replaces both)."""
    if path.endswith(".safetensors"):
        return "pytorch_" + path.removesuffix(".safetensors") + ".bin"
    if path.startswith("pytorch_") and path.endswith(".bin"):
        return path.removeprefix("pytorch_").removesuffix(".bin") + ".safetensors"
    return None


def apply(files: dict[str, bytes], commit: Commit) -> dict[str, bytes]:
    files = dict(files)
    for path in commit.files:
        partner = other_format(path)
        if partner and partner not in commit.files:
            files.pop(partner, None)
    for path in commit.deleted_files:
        files.pop(path, None)
    for folder in commit.deleted_folders:
        for path in [p for p in files if p.startswith(folder) or folder == "/"]:
            files.pop(path)
    files.update(commit.files)
    return files


# -- the card ------------------------------------------------------------------------------------


def front_matter(readme: bytes) -> tuple[dict[str, Any], str]:
    """(the YAML metadata, the text after it) of a model card; ({}, text) without front matter."""
    text = readme.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if not text.startswith("---"):
        return {}, text
    _, _, rest = text.partition("\n")
    meta, sep, body = rest.partition("\n---")
    if not sep:
        return {}, text
    try:
        data = yaml.safe_load(meta)
    except yaml.YAMLError as exc:
        raise UploadRefused(f"{README}: its YAML front matter does not parse: {exc}", 422) from None
    return (data if isinstance(data, dict) else {}), body.partition("\n")[2]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float)]
    return []


@dataclass
class Card:
    task: str = ""
    subtask: str = ""
    base_model: str = ""
    description: str = ""
    why: str = ""  # why the `datasets:` entry gave no subtask


def read_card(readme: bytes | None, type: str = "text_task") -> Card:
    card = Card()
    if readme is None:
        return card
    meta, body = front_matter(readme)
    tags = _strings(meta.get("tags"))
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep and key.strip() == "task":
            card.task = value.strip()
        elif sep and key.strip() == "subtask":
            card.subtask = value.strip()
    if not (card.task and card.subtask):
        datasets = _strings(meta.get("datasets"))
        matches = Subtask.objects.filter(
            task__type_id=type, hf_datasets_id__in=[d for d in datasets if d]
        ).select_related("task")
        if card.task:
            matches = matches.filter(task__task=card.task)
        if card.subtask:
            matches = matches.filter(subtask=card.subtask)
        found = list(matches[:5])
        if len(found) == 1:
            card.task, card.subtask = found[0].task.task, found[0].subtask
        elif found:
            names = ", ".join(f"{s.task.task}/{s.subtask}" for s in found)
            card.why = f"its `datasets:` {datasets} match several subtasks ({names}); "
        elif datasets:
            card.why = f"no subtask has the Hugging Face dataset of its `datasets:` {datasets}; "
    base = _strings(meta.get("base_model"))
    card.base_model = base[0] if base else ""
    text = body.strip()
    if text and "<!-- Add some description here -->" not in text[:200]:
        card.description = text[:5000]
    return card


# -- the commit as an upload ---------------------------------------------------------------------


def zip_files(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            zf.writestr(path, files[path])
    buffer.seek(0)
    return buffer


def commit_upload(*, user, token, org: str, name: str, commit: Commit) -> Upload:
    """Store the repo's files at this commit as an upload and queue its validation."""
    organisation = resolve_organisation(user, org, getattr(token, "organisation", None))
    adapter = published_adapter(organisation.name, name)
    files = apply(current_files(default_version(adapter)), commit)
    for path in IGNORED:
        files.pop(path, None)
    readme = files.pop(README, None)
    card = read_card(readme)
    task = card.task or (adapter.task.task if adapter else "")
    subtask = card.subtask or (adapter.subtask.subtask if adapter else "")
    if not task:
        raise UploadRefused(
            f"{org}/{name}: no task given; {card.why}{HOW_TO_GIVE_TASK}", 422, "task"
        )
    if not subtask:
        raise UploadRefused(
            f"{org}/{name}: no subtask given; {card.why}{HOW_TO_GIVE_TASK}", 422, "subtask"
        )
    extra: dict[str, Any] = {}
    if card.description:
        extra["description"] = card.description
    if readme is not None and len(readme) <= settings.HUB_CARD_FIELD_MAX_BYTES:
        # served as this version's README.md (a larger one: the hub generates one instead)
        extra["hf_readme"] = readme.decode("utf-8", "replace")
    summary = commit.summary.strip()
    if summary and summary not in DEFAULT_SUMMARIES:
        extra["version_description"] = summary[:1000]
    return create_upload(
        user=user,
        archive=zip_files(files),
        task=task,
        subtask=subtask,
        org=organisation.name,
        name=name,
        card=extra,
        filename=f"{name}.hf-commit.zip",
        scoped_to=getattr(token, "organisation", None),
    )


def wait_for(upload: Upload, seconds: float | None = None, poll: float = 0.25) -> Upload:
    """The upload once final, or as it is after `seconds` (HUB_HF_COMMIT_WAIT)."""
    if seconds is None:
        seconds = settings.HUB_HF_COMMIT_WAIT
    deadline = time.monotonic() + seconds
    while True:
        upload.refresh_from_db()
        if upload.is_final or time.monotonic() >= deadline:
            return upload
        time.sleep(poll)
