"""``push_adapter_to_hub``: as the reference library's, an adapter folder plus a README.md model card
(YAML front matter: tags, datasets, base model) uploaded with ``huggingface_hub`` (``create_repo``
with ``exist_ok``, then one commit of the folder) to ``HF_ENDPOINT`` (or ``endpoint=``).

On an AdapterHub server the card's tags ``task:<task>`` and ``subtask:<subtask>`` (or
``datasets_tag``, the Hugging Face dataset of a subtask) say where the adapter is catalogued::

    model.push_adapter_to_hub("my-org/my-adapter", "a",
                              adapter_card_kwargs={"tags": ["task:sentiment", "subtask:sst-2"]})
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["adapter_card", "push_adapter_to_hub"]

LIBRARY_TAG = "adapter-transformers"
PLACEHOLDER = "<!-- Add some description here -->"


def adapter_card(
    model: Any,
    adapter_name: str,
    repo_id: str,
    datasets_tag: str | None = None,
    tags: Iterable[str] | None = None,
    language: str | None = None,
    license: str | None = None,
    metrics: Iterable[str] | None = None,
    architecture_training: str = PLACEHOLDER,
    results: str = PLACEHOLDER,
    citation: str = PLACEHOLDER,
) -> str:
    """The README.md text the reference library writes for ``adapter_name``, with ``base_model``."""
    model_name = getattr(model.config, "name_or_path", None) or model.config.model_type
    all_tags = [LIBRARY_TAG, model.config.model_type]
    all_tags += [t for t in (tags or []) if t not in all_tags]
    meta: dict[str, Any] = {"tags": all_tags, "base_model": model_name}
    if datasets_tag:
        meta["datasets"] = [datasets_tag]
    if language:
        meta["language"] = [language]
    if license:
        meta["license"] = license
    if metrics:
        meta["metrics"] = list(metrics)
    heads = getattr(model, "heads", None)
    head_info = ""
    if heads is not None and adapter_name in heads:
        head_type = str(getattr(heads[adapter_name], "config", {}).get("head_type", "head"))
        head_info = f" and includes a prediction head for {head_type.replace('_', ' ')}"
    dataset = f"[{datasets_tag}](https://huggingface.co/datasets/{datasets_tag}/)"
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n")
    return "\n".join(
        [
            "---",
            front,
            "---",
            "",
            f"# Adapter `{repo_id}` for {model_name}",
            "",
            f"An [adapter](https://adapterhub.ml) for the `{model_name}` model that was trained on "
            f"the {dataset if datasets_tag else 'None'} dataset{head_info}.",
            "",
            "## Usage",
            "",
            "```python",
            "from adapters_core import AutoAdapterModel",
            "",
            f'model = AutoAdapterModel.from_pretrained("{model_name}")',
            f'adapter_name = model.load_adapter("{repo_id}", set_active=True)',
            "```",
            "",
            "## Architecture & Training",
            "",
            architecture_training,
            "",
            "## Evaluation results",
            "",
            results,
            "",
            "## Citation",
            "",
            citation,
            "",
        ]
    )


def push_adapter_to_hub(
    model: Any,
    repo_id: str,
    adapter_name: str,
    datasets_tag: str | None = None,
    local_path: str | os.PathLike | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    overwrite_adapter_card: bool = False,
    create_pr: bool = False,
    revision: str | None = None,
    commit_description: str | None = None,
    adapter_card_kwargs: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> str:
    """Save ``adapter_name`` (with its head) and a model card, and upload them to ``repo_id``;
    return the repo's URL. The arguments are the reference library's (plus ``endpoint``)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adapters-core-push-") as tmp:
        folder = Path(local_path) if local_path else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_adapter(str(folder), adapter_name)
        readme = folder / "README.md"
        if overwrite_adapter_card or not readme.exists():
            card = adapter_card(
                model,
                adapter_name,
                repo_id,
                datasets_tag=datasets_tag,
                **(adapter_card_kwargs or {}),
            )
            readme.write_text(card, encoding="utf-8")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message or f"Add adapter {adapter_name}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
    return str(url)
