"""Server time of the Explore UI's pages on the real Hub snapshot (291 cards), cold and warm.

    .venv/bin/python benchmarks/pages.py            # [--requests 50] [--redis redis://127.0.0.1:6379/14]

Creates the PostgreSQL database `adapterhub_bench_pages` (BENCH_PG, default
postgres://postgres@127.0.0.1:5432), syncs the snapshot into it, and drops it at the end.
Each page is requested through Django's full stack (middleware, URL resolution, the view,
template rendering) with the test client, in-process, DEBUG off, persistent DB connection;
the time is wall time around the request, so it excludes only the network and the WSGI server.

  cold   the response cache is cleared before every request: every request queries PostgreSQL
         and renders the templates (what the first visitor after a catalogue change pays)
  warm   the page was rendered once before: it is served from the response cache (local memory,
         or Redis with --redis), as every later anonymous visitor gets it

Anchor: the original site's dynamic pages take 11-15 ms each on this machine (Flask).
Target: median under 15 ms and no page's median over 50 ms, for home, explore, a subtask page
with filters, an adapter page and a search. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT.parent / "shared" / "hub-snapshot"
DB_NAME = "adapterhub_bench_pages"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432").rstrip("/")

PAGES = [
    ("home", "/"),
    ("explore", "/explore/"),
    ("subtask + filters", "/explore/sentiment/sst-2/?model_type=bert&sort=-score"),
    ("adapter list + facets", "/adapters/?task=nli&model_name=bert-base-uncased"),
    ("adapter page", "/adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer/"),
    ("adapter page, 141 versions", "/adapters/ukp/bert-base-uncased_sts_stackexchange_pfeiffer/"),
    ("search", "/search/?q=sst-2"),
]
TARGETED = {"home", "explore", "subtask + filters", "adapter page", "search"}


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{PG}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def snapshot_repo(dest: Path) -> Path:
    shutil.copytree(SNAPSHOT, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@e",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@e",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def measure(client, url: str, n: int, cold: bool, cache) -> list[float]:
    times = []
    client.get(url)  # warms the connection, the template loader and (for warm) the cache
    for _ in range(n):
        if cold:
            cache.clear()
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="requests per page and mode")
    parser.add_argument(
        "--redis", default="", help="a Redis URL for the cache (default: local memory)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    psql(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    psql(f'CREATE DATABASE "{DB_NAME}"')
    tmp = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    os.environ.update(
        {
            "DATABASE_URL": f"{PG}/{DB_NAME}",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-only",
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "HUB_DATA_DIR": str(tmp / "hub-data"),
            "HUB_VAR_DIR": str(tmp / "var"),
            "REDIS_URL": args.redis,
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_server.settings")
    sys.path.insert(0, str(ROOT))
    try:
        import django

        django.setup()
        from django.core.cache import cache
        from django.core.management import call_command
        from django.test import Client

        from hub_server.catalog.sync import sync_hub_repository

        call_command("migrate", verbosity=0)
        call_command("collectstatic", verbosity=0, interactive=False)
        run = sync_hub_repository(str(snapshot_repo(tmp / "hub-repo")))
        assert run.status == "succeeded", run.message
        client = Client()
        rows = []
        for name, url in PAGES:
            cold = measure(client, url, args.requests, True, cache)
            cache.clear()
            warm = measure(client, url, args.requests, False, cache)
            rows.append((name, cold, warm))

        print(
            f"\nPage server time, ms ({args.requests} requests each; Django test client, "
            f"DEBUG off, cache: {'Redis' if args.redis else 'local memory'})\n"
        )
        print("| page | cold median | cold p95 | cold max | warm median | warm p95 | warm max |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, cold, warm in rows:
            print(
                f"| {name} | {statistics.median(cold):.1f} | {pct(cold, 95):.1f} | {max(cold):.1f} "
                f"| {statistics.median(warm):.1f} | {pct(warm, 95):.1f} | {max(warm):.1f} |"
            )
        targeted = [r for r in rows if r[0] in TARGETED]
        overall_warm = statistics.median([t for r in targeted for t in r[2]])
        overall_cold = statistics.median([t for r in targeted for t in r[1]])
        worst = max(statistics.median(r[1]) for r in targeted)
        print(
            f"\nTargeted pages: median warm {overall_warm:.1f} ms, median cold {overall_cold:.1f} ms, "
            f"slowest cold median {worst:.1f} ms (target: median < 15 ms, none over 50 ms; "
            "anchor: 11-15 ms per dynamic page of the original site)"
        )
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            psql(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        shutil.rmtree(tmp, ignore_errors=True)


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
