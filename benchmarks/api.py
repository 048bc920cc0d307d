"""The REST API (and, where they exist, the legacy index, /hf/ and downloads) under wrk, on a
catalogue of 100,000 generated adapter cards in PostgreSQL.

    .venv/bin/python benchmarks/api.py            # [--cards 100000] [--duration 10] [--pairs 3]

Needs PostgreSQL (BENCH_PG, default postgres://postgres@127.0.0.1:5432), Redis (BENCH_REDIS,
default redis://127.0.0.1:6379/13: an EMPTY database number, flushed at the end) and
wrk (`apt-get install wrk`). The database `adapterhub_bench` is created and dropped here.

Method (docs/../spec/benchmarking.md): gunicorn, 2 sync workers, persistent DB connections,
Redis cache, DEBUG off, throttles off (one client at thousands of req/s is not what they are for;
cached reads are served before them anyway). Every endpoint is reported as a ratio to the floor
`/healthz` measured right before it: the median of `--pairs` interleaved floor/endpoint runs of
`wrk -t2 -c8 -d<duration>s`, each rotating over many URLs with a Lua script. "warm": the rotation
was requested once before (3 s warm-up), so pages come from the response cache; "cold": a second
gunicorn with HUB_RESPONSE_MAX_AGE=0 answers, where no stored response is ever fresh, so every
request misses the process memo and Redis, renders, and stores its page, as a real miss does.
(Cache keys are normalised, so the unique `_n=` parameter earlier runs used to miss no longer
misses.) The list index keeps its own age (HUB_SEARCH_INDEX_MAX_AGE, unchanged), so it is current,
as between catalogue changes. CPU ms per request = the gunicorn workers' user+system CPU time
delta (from /proc) divided by the requests wrk completed. How long that index takes to rebuild
after a change is timed separately and printed. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT.parent / "shared" / "hub-snapshot"
DB_NAME = "adapterhub_bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432").rstrip("/")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/13")
HUB_DATA = ROOT / "var" / "bench-api-hub-data"

TARGETS = {  # (mode, endpoint) -> (minimum ratio to the floor, maximum p99 ms)
    ("warm", "list"): (0.70, 20),
    ("warm", "search"): (0.70, 20),
    ("warm", "detail"): (0.70, 20),
    ("warm", "facets"): (0.70, 20),
    ("warm", "dist index"): (0.70, 20),
    ("warm", "hf model info"): (0.70, 20),
    ("cold", "list"): (0.15, None),
    ("cold", "search"): (0.15, None),
    ("cold", "detail"): (0.25, 50),
}

MODELS = [  # (model_name, model_type, weight): a long tail, as on the real hub
    ("bert-base-uncased", "bert", 30),
    ("bert-base-multilingual-cased", "bert", 14),
    ("roberta-base", "roberta", 12),
    ("xlm-roberta-base", "xlm-roberta", 10),
    ("distilbert-base-uncased", "distilbert", 8),
    ("bert-large-uncased", "bert", 5),
    ("roberta-large", "roberta", 5),
    ("xlm-roberta-large", "xlm-roberta", 4),
    ("gpt2", "gpt2", 3),
    ("facebook/bart-base", "bart", 3),
    ("t5-base", "t5", 3),
    ("microsoft/deberta-v3-base", "deberta-v2", 3),
    ("bert-base-cased", "bert", 2),
    ("distilroberta-base", "roberta", 2),
    ("facebook/bart-large", "bart", 2),
    ("t5-small", "t5", 2),
    ("google/electra-base-discriminator", "electra", 1),
    ("albert-base-v2", "albert", 1),
    ("aubmindlab/bert-base-arabert", "bert", 1),
    ("allenai/scibert_scivocab_uncased", "bert", 1),
    ("microsoft/mpnet-base", "mpnet", 1),
    ("google/mt5-base", "mt5", 1),
    ("EleutherAI/gpt-neo-125m", "gpt_neo", 1),
    ("sentence-transformers/all-MiniLM-L6-v2", "bert", 1),
]
ARCH_WEIGHTS = {"pfeiffer": 45, "houlsby": 25, "pfeiffer+inv": 12, "houlsby+inv": 8}
WORDS = (
    "adapter trained fine-tuned dataset epochs learning rate early stopping evaluation accuracy "
    "macro f1 language model multilingual transfer zero-shot cross-lingual benchmark seed batch "
    "size warmup steps reduction factor bottleneck layer normalization invertible embedding "
    "classification regression question answering entailment sentiment reviews news wiki"
).split()


# -- setup: the database and 100,000 cards ------------------------------------------------------


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(["psql", f"{PG}/{db}", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True)


def django_env(tmp: Path) -> dict:
    settings_py = tmp / "bench_settings.py"
    settings_py.write_text(
        "from hub_server.settings import *  # noqa: F401,F403\n"
        "REST_FRAMEWORK = {**REST_FRAMEWORK, "  # noqa: F405
        "'DEFAULT_THROTTLE_RATES': {'anon': None, 'user': None}}\n"
    )
    return {
        **os.environ,
        "PYTHONPATH": f"{tmp}:{ROOT}",
        "DJANGO_SETTINGS_MODULE": "bench_settings",
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "DB_CONN_MAX_AGE": "600",
        "REDIS_URL": REDIS,
        "CACHE_KEY_PREFIX": "bench",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "benchmark-only-secret-key-0123456789abcdef",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "LOG_LEVEL": "WARNING",
        "HUB_DATA_DIR": str(HUB_DATA),  # outlives the run with --keep, for --reuse
        "HUB_FILES_DIR": str(HUB_DATA / "files"),
        "CELERY_BROKER_URL": "",
        # The index's age stays put when the cold runs set HUB_RESPONSE_MAX_AGE=0.
        "HUB_SEARCH_INDEX_MAX_AGE": "300",
    }


def snapshot_reference_data() -> tuple[list, list, list]:
    import yaml

    tasks, subtasks, archs = [], [], []
    for path in sorted((SNAPSHOT / "tasks").glob("*/*.y*ml")):
        d = yaml.safe_load(path.read_text())
        tasks.append((path.parent.name, str(d["task"]), d["displayname"]))
    for path in sorted((SNAPSHOT / "subtasks").glob("*/*.y*ml")):
        d = yaml.safe_load(path.read_text())
        subtasks.append((path.parent.name, str(d["task"]), str(d["subtask"]), d.get("displayname")))
    for path in sorted((SNAPSHOT / "architectures").glob("*.y*ml")):
        d = yaml.safe_load(path.read_text())
        archs.append((d["name"], d["displayname"], d["config"]))
    return tasks, subtasks, archs


def load_catalogue(cards: int, seed: int = 7) -> dict:
    """Reference rows from the real snapshot, then `cards` generated adapters (+ 1-3 versions
    each) written with COPY. Returns what the URL rotations need."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from hub_server import storage
    from hub_server.catalog import hubformat
    from hub_server.catalog.models import (
        AdapterType,
        AdapterVersion,
        Architecture,
        Subtask,
        Task,
    )

    call_command("migrate", verbosity=0)
    rng = random.Random(seed)
    tasks, subtasks, archs = snapshot_reference_data()
    AdapterType.objects.bulk_create(
        [AdapterType(id="text_task", displayname="Task"), AdapterType(id="text_lang", displayname="Language")]
    )  # fmt: skip
    task_rows = Task.objects.bulk_create(
        [Task(type_id=t, task=n, displayname=dn) for t, n, dn in tasks]
    )
    task_by_key = {(t.type_id, t.task): t for t in task_rows}
    sub_rows = Subtask.objects.bulk_create(
        [
            Subtask(task=task_by_key[(t, n)], subtask=s, displayname=dn or s)
            for t, n, s, dn in subtasks
            if (t, n) in task_by_key
        ]
    )
    arch_rows = Architecture.objects.bulk_create(
        [
            Architecture(name=n, displayname=dn, config=c, config_hash=hubformat.config_hash(c))
            for n, dn, c in archs
        ]
    )
    arch_names = [a.name for a in arch_rows]
    arch_weights = [ARCH_WEIGHTS.get(a.name, 3) for a in arch_rows]
    # Popularity: a few subtasks, models and orgs hold most cards (Zipf-like).
    sub_weights = [1 / (i + 1) ** 0.8 for i in range(len(sub_rows))]
    rng.shuffle(sub_weights)
    orgs = ["ukp", "adapter-hub"] + [f"org{i:04d}" for i in range(2000)]
    org_weights = [1 / (i + 1) ** 1.1 for i in range(len(orgs))]
    authors = [f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}" for _ in range(3000)]
    now = datetime.now(UTC)

    adapters, versions = io.StringIO(), io.StringIO()
    aw = csv.writer(adapters, quoting=csv.QUOTE_NONNUMERIC)
    vw = csv.writer(versions, quoting=csv.QUOTE_NONNUMERIC)
    seen: dict[tuple, int] = {}
    details, combos, version_id = [], {}, 0
    subs_chosen = rng.choices(sub_rows, sub_weights, k=cards)
    models_chosen = rng.choices(MODELS, [m[2] for m in MODELS], k=cards)
    orgs_chosen = rng.choices(orgs, org_weights, k=cards)
    archs_chosen = rng.choices(range(len(arch_rows)), arch_weights, k=cards)
    for i in range(cards):
        pk = i + 1
        sub, (model, mtype, _), org, a = (
            subs_chosen[i],
            models_chosen[i],
            orgs_chosen[i],
            archs_chosen[i],
        )
        arch = arch_rows[a]
        task = sub.task
        overrides = {"using": arch.name}
        if rng.random() < 0.1:
            overrides["reduction_factor"] = rng.choice([2, 8, 32])
        config = hubformat.full_config(arch.config, overrides)
        base = f"{model.split('/')[-1]}_{task.task}_{sub.subtask}_{arch.name}"
        n = seen[(org, base)] = seen.get((org, base), 0) + 1
        name = base if n == 1 else f"{base}_{n}"
        updated = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
        description = (
            f"{arch_names[a]} adapter for {model} trained on {task.displayname} / "
            f"{sub.displayname}. " + " ".join(rng.choices(WORDS, k=rng.randint(8, 30))) + "."
        )
        author = rng.choice(authors)
        nversions = rng.choices([1, 2, 3], [70, 20, 10])[0]
        aw.writerow([
            pk, org, name, "active", task.type_id, task.pk, sub.pk, mtype, model, "",
            "t" if rng.random() < 0.4 else "f", arch.pk, json.dumps(overrides),
            json.dumps(config), hubformat.config_hash(config), author,
            f"{org}@example.org", "", "", "", "", description, "1", None, "[]",
            int(rng.lognormvariate(3, 2)), f"adapters/{org}/{name}.yaml", "",
            updated.isoformat(), updated.isoformat(),
        ])  # fmt: skip
        for v in range(1, nversions + 1):
            version_id += 1
            vw.writerow([
                version_id, pk, str(v), v - 1, f"https://files.example.org/{org}/{name}-{v}.zip",
                rng.randbytes(20).hex(), rng.randbytes(32).hex(), "", None, None, "", "external", "",
                0, updated.isoformat(),
            ])  # fmt: skip
        if len(details) < 2000 and rng.random() < 0.1:
            details.append((org, name))
        combos[(task.task, model)] = combos.get((task.task, model), 0) + 1
    adapters.seek(0)
    versions.seek(0)
    with connection.cursor() as cursor:
        cursor.copy_expert(
            "COPY catalog_adapter (id, org, name, status, type_id, task_id, subtask_id, model_type,"
            " model_name, model_class, has_head, architecture_id, config_overrides, config,"
            " config_hash, author, email, url, github, twitter, citation, description,"
            " default_version, hidden_size, warnings, downloads, source_path, source_blob,"
            " created_at, updated_at) FROM STDIN WITH (FORMAT csv, NULL '', FORCE_NULL (hidden_size))",
            adapters,
        )
        cursor.copy_expert(
            "COPY catalog_adapterversion (id, adapter_id, version, position, url, sha1, sha256,"
            " description, score, size, storage_key, file_status, file_error, downloads,"
            " created_at) FROM STDIN WITH (FORMAT csv, NULL '', FORCE_NULL (score, size))",
            versions,
        )
        for table in ("catalog_adapter", "catalog_adapterversion"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
    # What autovacuum leaves a loaded table in (it is off on this kind of machine's server):
    # statistics, and a visibility map, without which no COUNT is an index-only scan.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
    # One hosted 10 MB archive, served by the download view from storage.
    org, name = details[0]
    blob = storage.store_bytes(rng.randbytes(10 * 1024 * 1024))
    AdapterVersion.objects.filter(adapter__org=org, adapter__name=name, version="1").update(
        storage_key=blob.key,
        size=blob.digests.size,
        sha256=blob.sha256,
        sha1=blob.digests.sha1,
        file_status=AdapterVersion.FileStatus.HOSTED,
    )
    hosted = host_repos(details[1 : HOSTED_REPOS + 1], rng)
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id FROM catalog_adapter WHERE status = 'active' AND lower(org || '/' ||"
            " name || ' ' || model_name || ' ' || author || ' ' || description) LIKE '%sst-2%'"
            " ORDER BY downloads DESC, id LIMIT 21"
        )
        plan = "\n".join(r[0] for r in cursor.fetchall())
    connection.close()
    top_combos = sorted(combos, key=combos.get, reverse=True)[:1500]
    search_terms = sorted({s.subtask for s in sub_rows} | set(orgs[:200]))
    return {
        "details": details,
        "combos": top_combos,
        "terms": search_terms,
        "tasks": sorted({t.task for t in task_rows}),
        "models": sorted({m[0] for m in MODELS}),
        "download": (org, name),
        "hosted": hosted,
        "search_plan": plan,
    }


HOSTED_REPOS = 500

# What each endpoint's real clients send beyond a plain GET: the adapters libraries fetch the
# legacy index with requests, huggingface_hub its model info with requests or httpx, and all of
# them ask for gzip (../shared/spec/hf-protocol.md, section 2). "dist identity" is the same
# rotation from a client that asks for no compression (curl without --compressed): reported,
# with no target of its own.
GZIP_CLIENT = {"Accept-Encoding": "gzip, deflate"}
HEADERS = {"dist index": GZIP_CLIENT, "hf model info": GZIP_CLIENT}


def host_repos(adapters: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """Version 1 of each of `adapters` hosted with the members of a saved adapter (small random
    bytes), so /hf/ serves them as repos."""
    from hub_server import storage
    from hub_server.api.hf import git_blob_oid
    from hub_server.catalog.models import AdapterVersion, VersionFile

    members = {
        "adapter_config.json": rng.randbytes(600),
        "head_config.json": rng.randbytes(300),
        "pytorch_adapter.bin": rng.randbytes(4000),
        "pytorch_model_head.bin": rng.randbytes(2000),
    }
    stored = {path: (storage.store_bytes(data), data) for path, data in members.items()}
    archive = storage.store_bytes(rng.randbytes(8000))
    files = []
    for version in AdapterVersion.objects.filter(version="1", adapter__in=_adapter_ids(adapters)):
        version.storage_key, version.size = archive.key, archive.digests.size
        version.sha256, version.sha1 = archive.sha256, archive.digests.sha1
        version.file_status = AdapterVersion.FileStatus.HOSTED
        version.save()
        for path, (blob, data) in stored.items():
            files.append(
                VersionFile(version=version, path=path, size=len(data), sha256=blob.sha256,
                            git_oid=git_blob_oid(data), storage_key=blob.key)
            )  # fmt: skip
    VersionFile.objects.bulk_create(files)
    return adapters


def _adapter_ids(adapters: list[tuple[str, str]]) -> list[int]:
    from django.db.models import Q

    from hub_server.catalog.models import Adapter

    wanted = Q(pk__in=[])
    for org, name in adapters:
        wanted |= Q(org=org, name=name)
    return list(Adapter.objects.filter(wanted).values_list("id", flat=True))


# -- the server and wrk ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, port: int) -> subprocess.Popen:
    gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
    proc = subprocess.Popen(
        [str(gunicorn), "hub_server.wsgi:application", "-w", "2", "-k", "sync", "--preload",
         "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "120"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def worker_cpu_seconds(master: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def lua_script(tmp: Path, name: str, paths: list[str], headers=None) -> Path:
    quoted = ",\n".join(json.dumps(p) for p in paths)
    header_table = ", ".join(
        f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()
    )
    script = tmp / f"{name}.lua"
    script.write_text(
        f"local paths = {{\n{quoted}\n}}\n"
        f"local headers = {{{header_table}}}\n"
        "local counter = 0\n"
        "local next_id = 1\n"
        "function setup(thread) thread:set('tid', next_id); next_id = next_id + 1 end\n"
        "function init(args) math.randomseed(os.time() + tid); counter = math.random(#paths) end\n"
        "function request()\n"
        "  counter = counter + 1\n"
        "  local p = paths[(counter % #paths) + 1]\n"
        "  return wrk.format('GET', p, headers)\n"
        "end\n"
    )
    return script


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(port: int, script: Path, duration: int, master: int) -> dict:
    cpu0 = worker_cpu_seconds(master)
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{duration}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu = worker_cpu_seconds(master) - cpu0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    latency = {
        p: float(v) * UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency.get("50"),
        "p99": latency.get("99"),
        "cpu_ms": 1000 * cpu / max(requests, 1),
        "errors": int(errors.group(1)) if errors else 0,
        "requests": requests,
    }


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS).flushdb()


def empty_response_cache() -> None:
    """Every rendered response out of Redis, the catalogue generation kept: a cold run measures
    requests that find no page, not the rebuild that follows a catalogue change (timed apart)."""
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match="*resp:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def measure(port, master, tmp, name, paths, mode, duration, pairs, floor_script) -> dict:
    script = lua_script(tmp, f"{mode}-{name}".replace(" ", "_"), paths, headers=HEADERS.get(name))
    if mode == "warm":
        prewarm(port, paths)  # every URL of the rotation once: then all are cache hits
        wrk(port, script, 3, master)
    runs = []
    for _ in range(pairs):
        if mode == "cold":
            empty_response_cache()
        floor = wrk(port, floor_script, duration, master)
        run = wrk(port, script, duration, master)
        run["ratio"] = run["rps"] / floor["rps"]
        run["floor"] = floor
        runs.append(run)
    if mode == "cold":
        empty_response_cache()
    runs.sort(key=lambda r: r["ratio"])
    median = runs[len(runs) // 2]
    median["floor_rps"] = statistics.median(r["floor"]["rps"] for r in runs)
    median["floor_cpu_ms"] = statistics.median(r["floor"]["cpu_ms"] for r in runs)
    median["floor_p99"] = statistics.median(r["floor"]["p99"] for r in runs)
    return median


def prewarm(port: int, paths: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
            r.read()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(get, paths))


def probe(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated endpoint names to run")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="use the database a --keep run left (same --cards) instead of loading it again",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: install it with `apt-get install wrk`")
    import redis

    client = redis.Redis.from_url(REDIS)
    if client.dbsize():
        raise SystemExit(f"{REDIS} is not empty: point BENCH_REDIS at an unused database number")

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = django_env(tmp)
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    sys.path[:0] = [str(tmp), str(ROOT)]
    saved = ROOT / "var" / f"bench-api-{args.cards}.json"
    reuse = args.reuse and saved.exists()
    if not reuse:
        psql(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        psql(f'CREATE DATABASE "{DB_NAME}"')
    server = None
    try:
        started = time.perf_counter()
        if reuse:
            import django

            django.setup()
            data = json.loads(saved.read_text())
            print(f"reusing {DB_NAME} ({args.cards} cards) as described in {saved}")
        else:
            data = load_catalogue(args.cards)
            print(f"loaded {args.cards} cards in {time.perf_counter() - started:.0f} s")
            if args.keep:
                saved.parent.mkdir(exist_ok=True)
                saved.write_text(json.dumps(data))
        print("search plan at this size:\n  " + data["search_plan"].replace("\n", "\n  "))
        from hub_server.api.search_index import SearchIndex

        started = time.perf_counter()
        index = SearchIndex.build(generation=0)
        print(f"list index (rebuilt by each web process after a catalogue change): "
              f"{index.size} adapters in {time.perf_counter() - started:.1f} s, "
              f"{index.nbytes / 1e6:.0f} MB")  # fmt: skip
        del index
        port = free_port()
        server = start_server(env, port)
        master, cold_server = server.pid, False
        q = urllib.parse.quote
        details = [f"/api/v1/adapters/{q(o)}/{q(n)}/" for o, n in data["details"]]
        endpoints = {
            "list": [f"/api/v1/adapters/?task={q(t)}&model_name={q(m)}" for t, m in data["combos"]],
            "list cursor": [
                f"/api/v1/adapters/?task={q(t)}&model_name={q(m)}&cursor="
                for t, m in data["combos"]
            ],
            "search": [f"/api/v1/adapters/?q={q(t)}" for t in data["terms"]],
            "detail": details,
            "facets": [f"/api/v1/facets/?task={q(t)}" for t in data["tasks"]],
            "dist index": [f"/dist/v2/index/{m}.json" for m in data["models"]],
            "dist identity": [f"/dist/v2/index/{m}.json" for m in data["models"]],
            "hf model info": [f"/hf/api/models/{q(o)}/{q(n)}" for o, n in data["hosted"]],
            "download 10 MB": [
                "/api/v1/adapters/{}/{}/versions/1/download".format(*map(q, data["download"]))
            ],
        }
        for name, paths in list(endpoints.items()):
            if not probe(port, paths[0]):
                print(f"skipped {name}: {paths[0]} does not answer 200 (not built yet?)")
                del endpoints[name]
        if args.only:
            endpoints = {k: v for k, v in endpoints.items() if k in args.only.split(",")}
        floor_script = lua_script(tmp, "floor", ["/healthz"])
        wrk(port, floor_script, 3, master)  # warm-up of the workers and their connections
        plan = [("warm", n) for n in endpoints if n != "list cursor"] + [
            ("cold", n) for n in ("list", "list cursor", "search", "detail") if n in endpoints
        ]
        results = []
        for mode, name in plan:
            if mode == "cold" and not cold_server:
                # Every stored response is stale at once: each request renders and stores.
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
                server = start_server({**env, "HUB_RESPONSE_MAX_AGE": "0"}, port)
                master, cold_server = server.pid, True
                # Each worker builds its list index (as after start-up), then the runs begin.
                prewarm(port, [endpoints[n][0] for n in ("list", "search") if n in endpoints] * 8)
                wrk(port, floor_script, 3, master)
            r = measure(port, master, tmp, name, endpoints[name], mode, args.duration,
                        args.pairs, floor_script)  # fmt: skip
            results.append((mode, name, r))
            print(f"  {mode} {name}: {r['rps']:.0f} req/s, {100 * r['ratio']:.0f}% of floor",
                  flush=True)  # fmt: skip
        if results:
            print_table(results, args)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        if not args.keep:
            psql(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
            saved.unlink(missing_ok=True)
            shutil.rmtree(HUB_DATA, ignore_errors=True)
        flush_redis()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(results, args) -> None:
    print()
    print(f"{args.cards} cards; wrk -t2 -c8 -d{args.duration}s; median of {args.pairs} "
          "interleaved floor/endpoint pairs; gunicorn -w 2 sync, Redis cache")  # fmt: skip
    header = (f"| {'mode':4} | {'endpoint':14} | {'req/s':>7} | {'floor req/s':>11} | "
              f"{'ratio':>5} | {'p50 ms':>6} | {'p99 ms':>6} | {'CPU ms/req':>10} | "
              f"{'non-2xx':>7} | target |")  # fmt: skip
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    floor_cpu = statistics.median(r["floor_cpu_ms"] for _, _, r in results)
    floor_p99 = statistics.median(r["floor_p99"] for _, _, r in results)
    floor_rps = statistics.median(r["floor_rps"] for _, _, r in results)
    print(f"| {'':4} | {'/healthz floor':14} | {floor_rps:7.0f} | {floor_rps:11.0f} | "
          f"{100:4.0f}% | {'':>6} | {floor_p99:6.1f} | {floor_cpu:10.2f} | {'':>7} |        |")  # fmt: skip
    for mode, name, r in results:
        target = TARGETS.get((mode, name))
        verdict = ""
        if target:
            ok = r["ratio"] >= target[0] and (target[1] is None or r["p99"] < target[1])
            verdict = "met" if ok else "MISSED"
        print(f"| {mode:4} | {name:14} | {r['rps']:7.0f} | {r['floor_rps']:11.0f} | "
              f"{100 * r['ratio']:4.0f}% | {r['p50']:6.2f} | {r['p99']:6.1f} | "
              f"{r['cpu_ms']:10.2f} | {r['errors']:7d} | {verdict:6} |")  # fmt: skip


if __name__ == "__main__":
    main()
