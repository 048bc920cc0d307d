"""A hosted version's fixed /hf/ revision: its README.md (the one a client pushed, else a model
card generated from the catalogue) and the 40-hex commit sha derived from what it serves.

Both are stored on the version when it is published, so `(sha, path) -> bytes` never changes. The
catalogue holds this because publishing (uploads) fixes the revision and the /hf/ views (api) serve
it; neither imports the other (docs/architecture.md).
"""

from __future__ import annotations

import hashlib

import yaml

from hub_server.catalog.models import Adapter, AdapterVersion

LIBRARY_NAME = "adapter-transformers"


def archive_sha256(version: AdapterVersion) -> str:
    """The hosted archive's sha256 (a mirrored card may give only sha1: the key names it)."""
    return version.sha256 or version.storage_key.rsplit("/", 1)[-1]


def tags_of(adapter: Adapter) -> list[str]:
    return [
        LIBRARY_NAME,
        f"adapterhub:{adapter.task.task}/{adapter.subtask.subtask}",
        adapter.model_type,
    ]


def card_metadata(adapter: Adapter) -> dict:
    data = {
        "library_name": LIBRARY_NAME,
        "tags": tags_of(adapter),
        "base_model": adapter.model_name,
    }
    if adapter.subtask.hf_datasets_id:
        data["datasets"] = [adapter.subtask.hf_datasets_id]
    return data


def render_readme(adapter: Adapter, version: AdapterVersion, metadata: dict) -> bytes:
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    repo_id = f"{adapter.org}/{adapter.name}"
    head = " It includes a prediction head." if adapter.has_head else ""
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# Adapter `{repo_id}` for {adapter.model_name}",
        "",
        f"An [adapter](https://adapterhub.ml) for the `{adapter.model_name}` model, trained on "
        f"the {adapter.task.task}/{adapter.subtask.subtask} task "
        f"(architecture `{adapter.architecture.name}`).{head}",
        "",
        "It loads with the [Adapters](https://github.com/adapter-hub/adapters) library.",
        "",
        "## Usage",
        "",
        "```python",
        "from adapters import AutoAdapterModel",
        "",
        f'model = AutoAdapterModel.from_pretrained("{adapter.model_name}")',
        f'adapter_name = model.load_adapter("{repo_id}", set_active=True)',
        "```",
        "",
        f"AdapterHub identifier: `{adapter.identifier}`, version `{version.version}` "
        f"(archive sha256 `{archive_sha256(version)}`).",
    ]
    if adapter.description:
        lines += ["", "## Description", "", adapter.description.strip()]
    if adapter.citation:
        lines += ["", "## Citation", "", "```bibtex", adapter.citation.strip(), "```"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def revision_sha(adapter: Adapter, version: AdapterVersion, readme: bytes) -> str:
    seed = "\0".join(
        [
            "adapterhub-hf",
            adapter.org,
            adapter.name,
            version.version,
            archive_sha256(version),
            hashlib.sha256(readme).hexdigest(),
        ]
    )
    return hashlib.sha1(seed.encode()).hexdigest()


def freeze_revision(adapter: Adapter, version: AdapterVersion) -> None:
    """Fix this version's README.md and commit sha for good (at publish; lazily for versions
    published before they were stored): a pushed README stays, else the generated one."""
    if version.hf_sha:
        return
    readme = version.hf_readme.encode("utf-8") if version.hf_readme else None
    if readme is None:
        readme = render_readme(adapter, version, card_metadata(adapter))
    version.hf_readme = readme.decode("utf-8")
    version.hf_sha = revision_sha(adapter, version, readme)
    AdapterVersion.objects.filter(pk=version.pk, hf_sha="").update(
        hf_readme=version.hf_readme, hf_sha=version.hf_sha
    )


def freeze_hf_revisions(adapter: Adapter) -> None:
    """Fix the revision of every hosted version of `adapter` that has none yet."""
    for v in adapter.versions.filter(hf_sha="", file_status=AdapterVersion.FileStatus.HOSTED):
        freeze_revision(adapter, v)
