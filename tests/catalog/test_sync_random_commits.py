"""Random sequences of commits: after each, the incremental catalogue is the full sync's.

A seeded generator (reproducible: the failing seed and step are in the assertion message) edits a
small Hub repository the ways maintainers do: add, edit, rename, delete, break and fix cards, copy
one (a duplicate), give one a twin file (`.yml` beside `.yaml`), add and remove tasks, subtasks and
architectures. HUB_SYNC_RANDOM_SEEDS / HUB_SYNC_RANDOM_STEPS / HUB_SYNC_RANDOM_FIRST_SEED run it longer.
With adapters published on this hub present (ids and unique keys the maintainer's cards collide
with), the same holds and no sync touches them.
"""

from __future__ import annotations

import os
import random

import pytest

from hub_server.catalog.models import Adapter
from tests.catalog import minihub
from tests.catalog.minihub import MiniHub, publish_here, sync_and_compare

pytestmark = pytest.mark.django_db

FIRST_SEED = int(os.environ.get("HUB_SYNC_RANDOM_FIRST_SEED", "0"))
SEEDS = int(os.environ.get("HUB_SYNC_RANDOM_SEEDS", "4"))
STEPS = int(os.environ.get("HUB_SYNC_RANDOM_STEPS", "14"))

ORGS = ("ukp", "lab")
NAMES = ("a", "b", "c", "d")
MODELS = ("bert-base-uncased", "roberta-base")
SUBTASKS = (("sentiment", "sst-2"), ("sentiment", "imdb"), ("nli", "rte"))
OPTIONAL = {
    "task nli": (f"tasks/{minihub.TYPE}/nli.yaml", minihub.task_doc("nli")),
    "task nli again": (f"tasks/{minihub.TYPE}/a_nli.yaml", minihub.task_doc("nli", "NLI twice")),
    "subtask imdb": (
        f"subtasks/{minihub.TYPE}/sentiment_imdb.yaml",
        minihub.subtask_doc("sentiment", "imdb"),
    ),
    "subtask rte": (f"subtasks/{minihub.TYPE}/nli_rte.yaml", minihub.subtask_doc("nli", "rte")),
    "architecture houlsby": ("architectures/houlsby.yaml", minihub.arch_doc("houlsby", 8)),
}


class Maintainer:
    def __init__(self, hub: MiniHub, rng: random.Random):
        self.hub = hub
        self.rng = rng

    def cards(self) -> list[str]:
        return self.hub.files("adapters")

    def random_card(self) -> dict:
        task, subtask = self.rng.choice(SUBTASKS)
        return minihub.card_doc(
            task=task,
            subtask=subtask,
            model_name=self.rng.choice(MODELS),
            using=self.rng.choice(("pfeiffer", "pfeiffer", "houlsby")),
            description=f"v{self.rng.randrange(3)}",
        )

    def new_path(self) -> str:
        suffix = self.rng.choice((".yaml", ".yaml", ".yml"))
        return f"adapters/{self.rng.choice(ORGS)}/{self.rng.choice(NAMES)}{suffix}"

    def step(self) -> str:
        cards = self.cards()
        actions = ["add", "toggle", "arch"]
        if cards:
            actions += ["edit", "edit", "rename", "delete", "break", "duplicate", "twin"]
        action = self.rng.choice(actions)
        card = self.rng.choice(cards) if cards else None
        if action == "add":
            path = self.new_path()
            self.hub.write(path, self.random_card())
            return f"add {path}"
        if action == "edit" or (action == "break" and card and "broken" in self.hub.read(card)):
            self.hub.write(card, self.random_card())  # also fixes a broken card
            return f"edit {card}"
        if action == "rename":
            target = self.new_path()
            if self.hub.exists(target):
                return "rename onto an existing file: skipped"
            self.hub.rename(card, target)
            return f"rename {card} -> {target}"
        if action == "delete":
            self.hub.delete(card)
            return f"delete {card}"
        if action == "break":
            broken = self.rng.choice(("task: broken: [\n", "type: text_task\nbroken: true\n"))
            self.hub.write(card, broken)
            return f"break {card}"
        if action in ("duplicate", "twin"):
            if action == "twin":
                stem, suffix = card.rsplit(".", 1)
                target = f"{stem}.{'yml' if suffix == 'yaml' else 'yaml'}"
            else:
                target = self.new_path()
            self.hub.write(target, self.hub.read(card))
            return f"{action} {card} -> {target}"
        if action == "arch":
            rf = self.rng.choice((8, 16, 32))
            self.hub.write("architectures/pfeiffer.yaml", minihub.arch_doc("pfeiffer", rf))
            return f"pfeiffer reduction factor {rf}"
        name = self.rng.choice(sorted(OPTIONAL))
        path, doc = OPTIONAL[name]
        if self.hub.exists(path):
            self.hub.delete(path)
            return f"remove {name}"
        self.hub.write(path, doc)
        return f"add {name}"


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + SEEDS))
def test_random_commits_keep_incremental_equal_to_full(tmp_path, seed):
    hub = MiniHub(tmp_path / "hub")
    hub.commit("start")
    sync_and_compare(hub)
    rng = random.Random(seed)
    maintainer = Maintainer(hub, rng)
    history = []
    for step in range(STEPS):
        for _ in range(rng.choice((1, 1, 2, 3))):  # some commits change several files
            history.append(maintainer.step())
        hub.commit(history[-1])
        try:
            sync_and_compare(hub)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, step {step}, after: {history}") from exc


def published_rows() -> list:
    return sorted(
        Adapter.objects.filter(origin=Adapter.Origin.PUBLISHED).values_list(
            "org",
            "name",
            "status",
            "config_hash",
            "description",
            "source_blob",
            "versions__version",
            "versions__sha256",
            "versions__file_status",
        )  # fmt: skip
    )


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + max(1, SEEDS // 2)))
def test_random_commits_with_published_adapters_present(tmp_path, seed):
    hub = MiniHub(tmp_path / "hub")
    hub.commit("start")
    sync_and_compare(hub)
    # One at an id the maintainer's paths reach (adapters/lab/b.*), one holding the unique key
    # of the most common random card (the same card under another id is a duplicate).
    publish_here("lab", "b", minihub.card_doc(description="published"), "adapters/lab/b.yaml")
    publish_here("ukp", "z", minihub.card_doc(description="v0"), "adapters/ukp/z.yaml")
    published = published_rows()
    rng = random.Random(seed)
    maintainer = Maintainer(hub, rng)
    history = []
    for step in range(STEPS):
        for _ in range(rng.choice((1, 1, 2, 3))):
            history.append(maintainer.step())
        hub.commit(history[-1])
        try:
            sync_and_compare(hub)
            assert published_rows() == published
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, step {step}, after: {history}") from exc
