"""Wait for the database, and migrate it once however many processes start together.

    python scripts/stack/dbready.py migrate    # web: wait, then migrate under an advisory lock
    python scripts/stack/dbready.py wait       # worker, beat: wait until the schema is migrated
    python scripts/stack/dbready.py migrate --create   # first create the database if missing

Used by the image's entrypoint (docker/entrypoint.sh) and by the local stack (scripts/stack/).
On PostgreSQL the migration holds a session advisory lock, so several web replicas starting at
once migrate one after the other (the second finds nothing to do).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_server.settings")

# Any constant shared by every process of this hub; "hubm" in ASCII.
MIGRATE_LOCK_ID = 0x6875626D


def wait_for_database(timeout: float) -> None:
    from django.db import connection
    from django.db.utils import OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.ensure_connection()
            return
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"database not reachable after {timeout:.0f}s: {exc}") from None
            print(f"waiting for the database: {str(exc).strip().splitlines()[0]}", flush=True)
            connection.close()
            time.sleep(1)


def create_database() -> None:
    """CREATE DATABASE of DATABASE_URL when missing (PostgreSQL; the user needs CREATEDB)."""
    import psycopg2
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return
    params = {k.lower(): db[k] for k in ("USER", "PASSWORD", "HOST", "PORT") if db.get(k)}
    conn = psycopg2.connect(dbname="postgres", **params)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{db["NAME"]}"')
                print(f"created database {db['NAME']}", flush=True)
    finally:
        conn.close()


def unapplied_migrations() -> list[str]:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        call_command("migrate", interactive=False, verbosity=1)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK_ID])
    try:
        call_command("migrate", interactive=False, verbosity=1)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_ID])


def wait_for_schema(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pending := unapplied_migrations():
        if time.monotonic() > deadline:
            raise SystemExit(f"migrations still unapplied after {timeout:.0f}s: {pending[:5]}")
        print(f"waiting for {len(pending)} migration(s), e.g. {pending[0]}", flush=True)
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["wait", "migrate"])
    parser.add_argument("--create", action="store_true", help="create the database if missing")
    parser.add_argument(
        "--timeout", type=float, default=float(os.environ.get("DB_WAIT_TIMEOUT", 120))
    )
    args = parser.parse_args()

    import django

    django.setup()
    if args.create:
        create_database()
    wait_for_database(args.timeout)
    if args.action == "migrate":
        migrate()
    else:
        wait_for_schema(args.timeout)


if __name__ == "__main__":
    main()
