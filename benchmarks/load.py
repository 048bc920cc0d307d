"""Mixed reads for 60 s against the production-style stack while uploads are validated and the
catalogue is synced: errors (target 0), lost uploads (target 0), req/s and p99 per kind of read.

    .venv/bin/python benchmarks/load.py   # [--duration 60] [--clients 6] [--upload-every 3]

The stack is tests/deploy/stack.py's LocalStack (scripts/stack/: gunicorn with 2 workers, a Celery
worker with 2 processes and Celery beat, DJANGO_DEBUG=0) on a PostgreSQL database of its own
(`adapterhub_bench_load`, dropped at the end) and Redis number 9 (BENCH_LOAD_REDIS; flushed at the
end). The catalogue is the real Hub snapshot (../shared/hub-snapshot, 291 cards) in a git
repository that is both what the hub syncs and where it commits published cards, as a production
hub would be set up. Throttles are lifted (one client address at hundreds of req/s is not what they
are for). All traffic is loopback.

During the run:
- `--clients` threads read in a loop, each request drawn from: browse (home, explore, the list
  page and API list), search (API and page), detail (API and page), downloads (hosted versions by
  GET, external ones answered 302 and not followed), the legacy index (/dist/v2/) and /hf/ (model
  info and a file). An error is an exception, a 5xx or an answer other than the expected status.
- an upload every `--upload-every` s through POST /api/v1/uploads/ (a write token): a new version
  of a tiny BERT seq_bn adapter, validated and published by the worker;
- at 1/4 of the run a card is edited and committed and an incremental sync runs; at 1/2 a full
  sync (`manage.py sync_hub`).
After the run, each upload answered 202 must reach `published` within `--settle` s; one that does
not, or an upload answered 5xx, is lost. The machine is shared: numbers are of this run only.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import INTEROP, SNAPSHOT, git, make_git_repo  # noqa: E402
from tests.deploy.stack import LocalStack  # noqa: E402

DB_NAME = "adapterhub_bench_load"
REDIS = os.environ.get("BENCH_LOAD_REDIS", "redis://127.0.0.1:6379/9")
TINY_BERT = INTEROP / "models" / "tiny-bert"
TASK, SUBTASK = "sentiment", "sst-2"
SEARCH_WORDS = ["sentiment", "bert", "pfeiffer", "ner", "qa", "roberta", "sst", "conll", "xyz"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapter_versions(tmp: Path, n: int) -> list[bytes]:
    """n zips of one tiny BERT seq_bn adapter with a head, each with slightly different weights."""
    from benchmarks.uploads import variants
    from tests.uploads.conftest import save_tiny_adapter

    return variants(save_tiny_adapter(tmp / "adapter"), n, seed=0)


class Reads:
    """The URL mix; hosted adapters are added as uploads publish."""

    def __init__(self, cards: list[dict]):
        self.cards = cards
        self.models = sorted({c["model_name"] for c in cards if c.get("model_name")})
        self.hosted: list[tuple[str, str, str]] = []  # (org, name, version)
        self.lock = threading.Lock()

    def pick(self, rng: random.Random) -> tuple[str, str, tuple[int, ...]]:
        kind = rng.choices(
            ["browse", "search", "detail", "download", "index", "hf"], [3, 3, 3, 2, 2, 2]
        )[0]
        card = rng.choice(self.cards)
        org, name = card["org"], card["name"]
        with self.lock:
            hosted = rng.choice(self.hosted) if self.hosted else None
        if kind == "browse":
            url = rng.choice(
                ["/", "/explore/", f"/adapters/?page={rng.randint(1, 5)}",
                 f"/api/v1/adapters/?task={TASK}", "/api/v1/adapters/?page_size=50",
                 f"/explore/{TASK}/{SUBTASK}/"]
            )  # fmt: skip
            return kind, url, (200,)
        if kind == "search":
            word = rng.choice(SEARCH_WORDS)
            return kind, rng.choice([f"/api/v1/adapters/?q={word}", f"/search/?q={word}"]), (200,)
        if kind == "detail":
            if rng.random() < 0.5:
                return kind, f"/api/v1/adapters/{org}/{name}/", (200,)
            return kind, f"/adapters/{org}/{name}/", (200,)
        if kind == "download":
            if hosted and rng.random() < 0.7:
                o, n, v = hosted
                return kind, f"/api/v1/adapters/{o}/{n}/versions/{v}/download", (200,)
            version = card.get("default_version") or "1"
            # an external link: 302 to it (not followed)
            return kind, f"/api/v1/adapters/{org}/{name}/versions/{version}/download", (302,)
        if kind == "index":
            return kind, f"/dist/v2/index/{rng.choice(self.models)}.json", (200,)
        if hosted:
            o, n, v = hosted
            if rng.random() < 0.5:
                return kind, f"/hf/api/models/{o}/{n}", (200,)
            return kind, f"/hf/{o}/{n}/resolve/{v}/adapter_config.json", (200,)
        return kind, "/hf/api/models", (200,)


def reader(base: str, reads: Reads, stop: float, seed: int, results: dict, lock: threading.Lock):
    rng = random.Random(seed)
    session = requests.Session()
    local: dict[str, list] = defaultdict(lambda: [0, 0, []])  # requests, errors, latencies
    examples: list[str] = []
    while time.monotonic() < stop:
        kind, url, ok = reads.pick(rng)
        started = time.perf_counter()
        try:
            r = session.get(base + url, allow_redirects=False, timeout=30)
            body_ok = r.status_code in ok
            _ = r.content
        except requests.RequestException as exc:
            body_ok, r = False, None
            examples.append(f"{url}: {exc}")
        elapsed = (time.perf_counter() - started) * 1000
        entry = local[kind]
        entry[0] += 1
        entry[2].append(elapsed)
        if not body_ok:
            entry[1] += 1
            if r is not None and len(examples) < 20:
                examples.append(f"{url}: {r.status_code} {r.text[:200]!r}")
    with lock:
        for kind, (n, e, lat) in local.items():
            total = results.setdefault(kind, [0, 0, []])
            total[0] += n
            total[1] += e
            total[2].extend(lat)
        results.setdefault("_examples", []).extend(examples)


def uploader(base, token, datas, every, stop, sent, lock):
    headers = {"Authorization": f"Bearer {token}"}
    name = "tiny-bert-load"
    while datas and time.monotonic() < stop:
        data = datas.pop()
        try:
            r = requests.post(
                base + "/api/v1/uploads/",
                headers=headers,
                data={"task": TASK, "subtask": SUBTASK, "org": "bench", "name": name},
                files={"archive": ("a.zip", data)},
                timeout=60,
            )
            status, body = r.status_code, (r.json() if r.status_code < 500 else r.text[:200])
        except requests.RequestException as exc:
            status, body = 0, str(exc)
        with lock:
            sent.append((status, body))
        time.sleep(every)


def edit_card(repo: Path) -> str:
    """Change one snapshot card's description and commit it, under the lock the publisher takes."""
    with open(repo / ".git" / "adapterhub-publish.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for card in sorted((repo / "adapters").rglob("*.yaml")):
            lines = card.read_text().splitlines()
            at = [i for i, line in enumerate(lines) if line.startswith("description: ")]
            if card.parent.name != "bench" and at and lines[at[0]][13:14] not in (">", "|"):
                lines[at[0]] = f'description: "edited under load at {time.time():.0f}"'
                card.write_text("\n".join(lines) + "\n")
                break
        rel = str(card.relative_to(repo))
        git(repo, "add", "--", rel)
        git(repo, "commit", "-q", "-m", "edit a card under load", "--", rel)
    return rel


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--upload-every", type=float, default=3)
    parser.add_argument("--settle", type=float, default=240)
    parser.add_argument("--keep", action="store_true", help="leave the stack and database")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    repo = make_git_repo(SNAPSHOT, tmp / "hub-repo")
    port = free_port()
    redis_db = int(REDIS.rsplit("/", 1)[1])
    stack = LocalStack(
        tmp / "stack", port=port, db_name=DB_NAME, redis_db=redis_db,
        redis_url=REDIS.rsplit("/", 1)[0],
        env={
            "HUB_REPO_URL": str(repo), "HUB_REPO_BRANCH": "main",
            "HUB_PUBLISH_REPO": str(repo), "HUB_PUBLISH_BRANCH": "main",
            "HUB_BASE_MODELS": json.dumps({"tiny-bert": str(TINY_BERT)}),
            "API_THROTTLE_ANON": "1000000/min", "API_THROTTLE_USER": "1000000/min",
            "HUB_UPLOAD_QUOTA_COUNT": "0", "HUB_UPLOAD_QUOTA_BYTES": "0",
            "LOG_LEVEL": "WARNING",
        },
    )  # fmt: skip
    stack.create_database()
    datas = adapter_versions(tmp, int(args.duration / args.upload_every) + 2)
    try:
        stack.start()
        stack.wait_ready()
        t = time.perf_counter()
        stack.manage("sync_hub")
        print(f"initial sync: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        token = stack.manage("create_token", "bench", "--org", "bench", "--write").stdout
        token = next(w for w in token.split() if w.startswith("ahub_"))
        base = stack.url
        listed = stack.manage(
            "shell", "-c",
            "import json; from hub_server.catalog.models import Adapter; print(json.dumps(list("
            "Adapter.objects.filter(status='active').values('org', 'name', 'model_name', "
            "'default_version'))))",
        ).stdout  # fmt: skip
        cards = json.loads(listed.strip().splitlines()[-1])
        reads = Reads(cards)
        # warm each web process a little (imports, first queries), as a running hub is
        warm_stop = time.monotonic() + 5
        reader(base, reads, warm_stop, 999, {}, threading.Lock())

        results: dict = {}
        lock = threading.Lock()
        sent: list = []
        started = time.monotonic()
        stop = started + args.duration
        threads = [
            threading.Thread(target=reader, args=(base, reads, stop, i, results, lock))
            for i in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=uploader, args=(base, token, datas, args.upload_every, stop, sent, lock)
            )
        )
        for th in threads:
            th.start()
        syncs = []
        session = requests.Session()
        headers = {"Authorization": f"Bearer {token}"}
        next_poll = 0.0
        sync_at = [started + args.duration / 4, started + args.duration / 2]
        while time.monotonic() < stop:
            if sync_at and time.monotonic() >= sync_at[0]:
                full = len(sync_at) == 1
                sync_at.pop(0)
                edited = None if full else edit_card(repo)
                t = time.perf_counter()
                out = stack.manage("sync_hub", *(["--full"] if full else []), timeout=300)
                syncs.append(
                    ("full" if full else f"incremental ({edited})", time.perf_counter() - t,
                     out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
                )  # fmt: skip
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 2
                mine = session.get(base + "/api/v1/uploads/", headers=headers, timeout=30).json()
                with reads.lock:
                    reads.hosted = [
                        ("bench", u["adapter"]["name"], u["adapter"]["version"])
                        for u in mine
                        if u["status"] == "published" and u.get("adapter")
                    ]
            time.sleep(0.2)
        for th in threads:
            th.join()
        elapsed = time.monotonic() - started

        accepted = [body["id"] for status, body in sent if status == 202]
        refused = [(status, body) for status, body in sent if status != 202]
        deadline = time.monotonic() + args.settle
        final: dict[int, dict] = {}
        while time.monotonic() < deadline:
            mine = {u["id"]: u for u in session.get(base + "/api/v1/uploads/", headers=headers,
                                                       timeout=30).json()}  # fmt: skip
            final = {i: mine[i] for i in accepted if i in mine}
            if all(u["status"] in ("published", "rejected") for u in final.values()):
                break
            time.sleep(1)
        published = [u for u in final.values() if u["status"] == "published"]
        rejected = [u for u in final.values() if u["status"] == "rejected"]
        lost = (
            len(accepted)
            - len(published)
            - len(rejected)
            + len([s for s, _ in refused if s == 0 or s >= 500])
        )
        ready = requests.get(base + "/readyz", timeout=10).status_code
    finally:
        logs = stack.logs(15)
        if not args.keep:
            stack.stop()
            stack.drop_database()
            stack.flush_redis()

    print(f"\n{args.duration:.0f} s, {args.clients} reading clients, uploads every "
          f"{args.upload_every:g} s, {len(cards)} cards; {os.cpu_count()} cores (shared)\n")  # fmt: skip
    print("| reads | requests | errors | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    total_n = total_e = 0
    all_lat: list[float] = []
    for kind in ["browse", "search", "detail", "download", "index", "hf"]:
        n, e, lat = results.get(kind, [0, 0, []])
        total_n, total_e = total_n + n, total_e + e
        all_lat += lat
        print(f"| {kind} | {n} | {e} | {n / elapsed:.0f} | {percentile(lat, 0.5):.1f} | "
              f"{percentile(lat, 0.99):.1f} |")  # fmt: skip
    print(f"| **all** | {total_n} | {total_e} | {total_n / elapsed:.0f} | "
          f"{percentile(all_lat, 0.5):.1f} | {percentile(all_lat, 0.99):.1f} |")  # fmt: skip
    print("\n| uploads | count |")
    print("|---|---|")
    print(f"| sent | {len(sent)} |")
    print(f"| answered 202 | {len(accepted)} |")
    print(f"| published | {len(published)} |")
    print(f"| rejected | {len(rejected)} |")
    print(f"| refused (not 202) | {len(refused)} |")
    print(f"| **lost** | {lost} |")
    if published:
        lat = [
            (_ts(u["finished_at"]) - _ts(u["created_at"])) for u in published if u["finished_at"]
        ]
        print(f"| upload to published, median / max | {statistics.median(lat):.1f} s / "
              f"{max(lat):.1f} s |")  # fmt: skip
    print("\n| sync under load | seconds | result |")
    print("|---|---|---|")
    for what, seconds, line in syncs:
        print(f"| {what} | {seconds:.1f} | {line} |")
    print(f"\n/readyz after the run: {ready}")
    errors = results.get("_examples", [])
    if errors or rejected or refused or lost:
        print("\nexamples:", *errors[:10], *[u["message"] for u in rejected[:3]],
              *[str(r) for r in refused[:3]], sep="\n  ")  # fmt: skip
        print(logs)
    sys.exit(1 if total_e or lost else 0)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()
