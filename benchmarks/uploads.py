"""Upload-to-published time of a MiniLM seq_bn adapter with a warm worker, and the throughput of
two workers over 50 uploads (issue: contributor upload workflow).

Real Celery workers (`celery worker -P solo`, one process each) on Redis, a PostgreSQL database of
its own, the demo catalogue; each upload is a distinct version (the trained weights plus a little
noise) of the same adapter, submitted through `services.create_upload` (what the API view calls).
Latency = from create_upload to the status published. Target: under 5 s with a warm worker.

    .venv/bin/python benchmarks/uploads.py [--uploads 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "adapterhub_bench_uploads"
BROKER = "redis://127.0.0.1:6379/12"


def setup_env(tmp: Path, db_url: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": f"{db_url.rsplit('/', 1)[0]}/{DB_NAME}",
        "DB_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": BROKER,
        "HUB_DATA_DIR": str(tmp / "data"),
        "HUB_FILES_DIR": str(tmp / "files"),
        "HUB_PUBLIC_URL": "",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    return {**os.environ, **env}


def recreate_database(db_url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()


def start_worker(env: dict, queue: str, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - kept open for the worker's life
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/celery"), "-A", "hub_server", "worker", "-P", "solo", "-Q", queue,
         "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"{uuid.uuid4().hex[:8]}@%h"],
        cwd=ROOT, env=env, stdout=out, stderr=out,
    )  # fmt: skip
    return proc


def wait_ready(log: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(" ready.") < count:
        if time.monotonic() > deadline:
            sys.exit(f"workers not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def variants(folder: Path, n: int, seed: int) -> list[bytes]:
    """n zips of the folder, each with slightly different adapter weights (distinct versions)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "adapter.safetensors"))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        noisy = {k: v + 1e-4 * torch.randn(v.shape, generator=g) for k, v in state.items()}
        buffer = io.BytesIO()
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as zf:
            save_file(noisy, f"{tmp}/adapter.safetensors")
            for p in sorted(folder.iterdir()):
                source = Path(tmp, p.name) if p.name == "adapter.safetensors" else p
                zf.write(source, p.name)
        out.append(buffer.getvalue())
    return out


def submit(user, data: bytes):
    from hub_server.uploads import services

    return services.create_upload(
        user=user, archive=io.BytesIO(data), task="sentiment", subtask="demo-reviews",
        org="bench", name="minilm-bench-seq-bn",
    )  # fmt: skip


def wait_final(ids: list[int], timeout: float = 1800) -> dict[int, float]:
    """{upload id: seconds from creation to published}; exits on a rejection."""
    from hub_server.uploads.models import Upload

    deadline = time.monotonic() + timeout
    while True:
        rows = list(Upload.objects.filter(pk__in=ids).values("pk", "status", "message",
                                                               "created_at", "finished_at"))  # fmt: skip
        if any(r["status"] == "rejected" for r in rows):
            sys.exit(f"rejected: {[r['message'] for r in rows if r['status'] == 'rejected']}")
        if all(r["status"] == "published" for r in rows):
            return {r["pk"]: (r["finished_at"] - r["created_at"]).total_seconds() for r in rows}
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for the uploads")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    recreate_database(args.db_url)
    env = setup_env(tmp, args.db_url)
    queue = f"bench-uploads-{uuid.uuid4().hex[:8]}"
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = queue
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_server.settings")
    django.setup()
    from django.core.management import call_command

    from hub_server.accounts import services as accounts
    from hub_server.celery import app
    from hub_server.uploads import demo_adapters

    app.conf.task_default_queue = queue
    call_command("migrate", verbosity=0)
    call_command("load_demo", "--no-adapters", verbosity=0)
    user = accounts.get_or_create_user("bench")
    accounts.create_organisation("bench", owner=user)
    print("training the MiniLM seq_bn adapter ...", file=sys.stderr)
    folder = demo_adapters.train_demo_adapter(demo_adapters.DEMO_ADAPTERS[0], tmp / "adapter")
    datas = variants(folder, args.latency_runs + args.workers + args.uploads, seed=0)

    log = tmp / "workers.log"
    workers = [start_worker(env, queue, log)]
    try:
        wait_ready(log, 1)
        # warm-up: the worker loads MiniLM once and keeps it
        warm = submit(user, datas.pop())
        first = wait_final([warm.pk])[warm.pk]
        latencies = []
        for _ in range(args.latency_runs):
            up = submit(user, datas.pop())
            latencies.append(wait_final([up.pk])[up.pk])

        workers += [start_worker(env, queue, log) for _ in range(args.workers - 1)]
        wait_ready(log, args.workers)
        # warm the new workers too, one upload each, so the throughput is steady-state
        wait_final([submit(user, datas.pop()).pk for _ in range(args.workers - 1)])
        datas = datas[: args.uploads] if len(datas) >= args.uploads else datas
        started = time.perf_counter()
        ids = [submit(user, d).pk for d in datas]
        per_upload = wait_final(ids)
        elapsed = time.perf_counter() - started
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        import redis

        redis.Redis.from_url(BROKER).delete(queue, f"_kombu.binding.{queue}")

    from hub_server.uploads.models import Upload

    report = Upload.objects.filter(pk=ids[-1]).values_list("report", flat=True)[0]
    print("| measurement | value |")
    print("|---|---|")
    print(f"| first upload, cold worker (loads MiniLM) | {first:.2f} s |")
    print(f"| upload -> published, warm worker, median of {len(latencies)} | "
          f"{statistics.median(latencies):.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}) |")  # fmt: skip
    print(f"| {len(ids)} uploads, {args.workers} workers: wall time | {elapsed:.1f} s |")
    print(f"| throughput, {args.workers} workers | {len(ids) / elapsed * 60:.1f} uploads/min |")
    print(f"| latency under load, median / max | {statistics.median(per_upload.values()):.1f} s / "
          f"{max(per_upload.values()):.1f} s |")  # fmt: skip
    print("\nchecks of one upload (ms): " + ", ".join(
        f"{e['name']} {e['duration_ms']:.0f}" for e in report))  # fmt: skip
    print(f"cpu: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
