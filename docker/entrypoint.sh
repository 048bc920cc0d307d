#!/bin/sh
# Entry point of the hub image: `web`, `worker`, `beat`, `manage ARGS...`, or any command.
# Only `web` migrates (under a PostgreSQL advisory lock, so replicas may start together);
# worker and beat wait until the schema is migrated.
set -eu
cd "${HUB_APP_DIR:-/app}"

refuse_placeholder() {
  # .env.example validates the compose file with placeholder secrets; never run with them.
  case "${2:-}" in
    *CHANGE-ME*|*change-me*) echo "refusing to start: $1 is still the placeholder of .env.example" >&2; exit 64 ;;
  esac
}
refuse_placeholder DJANGO_SECRET_KEY "${DJANGO_SECRET_KEY:-}"
refuse_placeholder DATABASE_URL "${DATABASE_URL:-}"
refuse_placeholder HUB_WEBHOOK_SECRET "${HUB_WEBHOOK_SECRET:-}"
refuse_placeholder AWS_SECRET_ACCESS_KEY "${AWS_SECRET_ACCESS_KEY:-}"

# nginx can hand off only files on the local volume: with S3 the web streams from the bucket.
if [ "${HUB_STORAGE:-local}" = "s3" ] && [ -n "${HUB_ACCEL_REDIRECT_PREFIX:-}" ]; then
  echo "HUB_STORAGE=s3: ignoring HUB_ACCEL_REDIRECT_PREFIX=${HUB_ACCEL_REDIRECT_PREFIX}" >&2
  export HUB_ACCEL_REDIRECT_PREFIX=""
fi

role="${1:-web}"
[ $# -gt 0 ] && shift
case "$role" in
  web)
    if [ "${HUB_MIGRATE_ON_START:-1}" = "1" ]; then
      python scripts/stack/dbready.py migrate
    else
      python scripts/stack/dbready.py wait
    fi
    exec gunicorn --config docker/gunicorn.conf.py "$@" hub_server.wsgi:application
    ;;
  worker)
    python scripts/stack/dbready.py wait
    exec celery --app hub_server worker --loglevel "${LOG_LEVEL:-INFO}" \
      --concurrency "${CELERY_WORKER_CONCURRENCY:-2}" --hostname "worker@%h" "$@"
    ;;
  beat)
    python scripts/stack/dbready.py wait
    exec celery --app hub_server beat --loglevel "${LOG_LEVEL:-INFO}" \
      --schedule /tmp/celerybeat-schedule --pidfile /tmp/celerybeat.pid "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
