"""Time and peak memory of the git sync (issue: foundation).

Scenarios, each in a fresh process against its own PostgreSQL database:
  cold      full sync of the real Hub snapshot (291 cards) into an empty catalogue
  noop      a second sync with no new commit
  one-card  a commit that edits one card, then an incremental sync
  20k       a generated repository of 20,000 cards, cold

Anchor: the original site rebuilds its database from the same 291 cards in 2.0-2.4 s (no
validation) and then needs 33 s to regenerate its static pages. Targets: cold < 3 s with full
validation, no-op < 0.5 s, one card < 1 s, 20,000 cards < 2 min and < 1 GiB.

    .venv/bin/python benchmarks/sync.py [--db-url postgres://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT.parent / "shared" / "hub-snapshot"
DB_NAME = "adapterhub_bench_sync"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True)


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_snapshot_repo(dest: Path) -> Path:
    shutil.copytree(SNAPSHOT, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    git(dest, "init", "-q", "-b", "main")
    commit(dest, "snapshot")
    return dest


def make_generated_repo(dest: Path, cards: int) -> Path:
    """The snapshot's reference files plus `cards` generated adapter cards in 200 orgs."""
    dest.mkdir(parents=True)
    for folder in ("adapter_types", "tasks", "subtasks", "architectures"):
        shutil.copytree(SNAPSHOT / folder, dest / folder)
    import yaml

    subtasks = []
    for path in sorted((SNAPSHOT / "subtasks" / "text_task").glob("*.y*ml")):
        data = yaml.safe_load(path.read_text())
        subtasks.append((data["task"], data["subtask"]))
    rng = random.Random(7)
    archs = ["pfeiffer", "houlsby", "pfeiffer+inv", "houlsby+inv"]
    for i in range(cards):
        org = f"org{i % 200:03d}"
        task, subtask = subtasks[(i // 200) % len(subtasks)]
        model = f"model-{i // (200 * len(subtasks))}-{rng.choice(['base', 'large'])}"
        arch = archs[i % len(archs)]
        card = dest / "adapters" / org / f"{model}_{task}_{subtask}_{arch}_{i}.yaml"
        card.parent.mkdir(parents=True, exist_ok=True)
        sha = f"{rng.getrandbits(160):040x}"
        card.write_text(
            f"type: text_task\ntask: {task}\nsubtask: {subtask}\nmodel_type: bert\n"
            f"model_name: {model}\nauthor: Bench Author {i}\nemail: a{i}@example.org\n"
            f"description: Generated card {i} for the sync benchmark.\n"
            f"config:\n  using: {arch}\n"
            f"default_version: '1'\nfiles:\n"
            f"- version: '1'\n  url: https://example.org/{org}/{i}.zip\n  sha1: {sha}\n"
            f"- version: '2'\n  url: https://example.org/{org}/{i}-2.zip\n  sha1: {sha[::-1]}\n"
        )
    git(dest, "init", "-q", "-b", "main")
    commit(dest, "generated")
    return dest


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(args) -> None:
    """One scenario in this process; prints one JSON line."""
    os.environ["DATABASE_URL"] = args.worker_db
    os.environ["HUB_DATA_DIR"] = args.data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_server.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from hub_server.catalog.sync import sync_hub_repository

    base = rss_mb("VmRSS")
    started = time.perf_counter()
    run = sync_hub_repository(args.repo, full=args.full)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": rss_mb("VmHWM"),
                "base_mb": base,
                "status": run.status,
                "added": run.added,
                "updated": run.updated,
                "removed": run.removed,
                "errors": len(run.errors),
            }
        )
    )


def run_scenario(db_url: str, data_dir: Path, repo: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--worker-db", db_url, "--data-dir", str(data_dir),
         "--repo", str(repo)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def reset_database(admin_url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()
    db_url = admin_url.rsplit("/", 1)[0] + "/" + DB_NAME
    env = {**os.environ, "DATABASE_URL": db_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return db_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-db", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        tmp = Path(tmp)
        repo = make_snapshot_repo(tmp / "snapshot")
        db = reset_database(args.db_url)
        rows.append(("cold: real snapshot (291 cards)", run_scenario(db, tmp / "data", repo), 3.0))
        rows.append(("no-op re-sync", run_scenario(db, tmp / "data", repo), 0.5))
        card = repo / "adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.yaml"
        card.write_text(card.read_text().replace("20 epochs", "21 epochs"))
        commit(repo, "edit one card")
        rows.append(("one-card commit", run_scenario(db, tmp / "data", repo), 1.0))

        print(f"generating {args.cards:,} cards ...", file=sys.stderr)
        big = make_generated_repo(tmp / "generated", args.cards)
        db = reset_database(args.db_url)
        rows.append(
            (f"cold: generated ({args.cards:,} cards)", run_scenario(db, tmp / "data2", big), 120.0)
        )
        reset_database(args.db_url)

    print()
    print(
        f"{'scenario':36} {'seconds':>8} {'target':>7} {'peak RSS MB':>12} {'sync MB':>8}  result"
    )
    for name, r, target in rows:
        grown = r["peak_mb"] - r["base_mb"]
        result = (
            f"{r['status']}: +{r['added']} ~{r['updated']} -{r['removed']} errors {r['errors']}"
        )
        print(
            f"{name:36} {r['seconds']:8.3f} {target:7.1f} {r['peak_mb']:12.0f} {grown:8.0f}  {result}"
        )


if __name__ == "__main__":
    main()
