#!/usr/bin/env bash
# Start the production-style stack without Docker: gunicorn (2 workers), a Celery worker and
# Celery beat, against PostgreSQL and Redis, with the production settings (DJANGO_DEBUG=0).
#
#   scripts/stack/start.sh [DIR]        DIR defaults to var/stack; settings from DIR/stack.env
#                                       (or $STACK_ENV), written with local defaults if missing
#
# The stack's own variables (besides docs/configuration.md): STACK_HOST (127.0.0.1),
# STACK_PORT (8100), STACK_CREATE_DB (1: create the database if missing), GUNICORN_WORKERS (2),
# CELERY_WORKER_CONCURRENCY (2). Processes already running are left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mkdir -p "$RUN" "$LOG"

if [ ! -f "$STACK_ENV" ]; then
  secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
  cat >"$STACK_ENV" <<ENV
# Written by scripts/stack/start.sh; edit freely (docs/configuration.md, docs/operations.md).
DATABASE_URL=postgres://postgres@127.0.0.1:5432/adapterhub_stack
CELERY_BROKER_URL=redis://127.0.0.1:6379/3
REDIS_URL=redis://127.0.0.1:6379/3
CACHE_KEY_PREFIX=stack
DJANGO_DEBUG=0
DJANGO_SECRET_KEY=$secret
DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
# Plain HTTP on loopback: no redirect to https, cookies without the Secure flag, no HSTS.
DJANGO_SECURE_SSL_REDIRECT=0
DJANGO_SECURE_COOKIES=0
DJANGO_SECURE_HSTS_SECONDS=0
HUB_VAR_DIR=$STACK_DIR/var
HUB_DATA_DIR=$STACK_DIR/hub-data
STACK_HOST=127.0.0.1
STACK_PORT=8100
STACK_CREATE_DB=1
ENV
  echo "wrote $STACK_ENV"
fi
load_env
cd "$ROOT"

host="${STACK_HOST:-127.0.0.1}"
port="${STACK_PORT:-8100}"

# Launch one role in its own session, detached from this shell; its pid goes to run/ROLE.pid.
launch() {
  local role="$1"
  shift
  if pid="$(stack_pid "$role")"; then
    echo "$role already running (pid $pid)"
    return
  fi
  nohup setsid "$@" >>"$LOG/$role.log" 2>&1 </dev/null &
  echo $! >"$RUN/$role.pid"
  echo "started $role (pid $!)"
}

create=()
[ "${STACK_CREATE_DB:-0}" = "1" ] && create=(--create)
"$PY" scripts/stack/dbready.py migrate "${create[@]}" >>"$LOG/migrate.log" 2>&1 ||
  { tail -n 20 "$LOG/migrate.log" >&2; exit 1; }
"$PY" manage.py collectstatic --noinput --verbosity 0 >>"$LOG/migrate.log" 2>&1 ||
  { tail -n 20 "$LOG/migrate.log" >&2; exit 1; }

GUNICORN_ACCESS_LOG="$LOG/web-access.log" GUNICORN_ERROR_LOG="-" GUNICORN_CONTROL_SOCKET="$RUN/gunicorn.ctl" \
  launch web "$BIN/gunicorn" --config docker/gunicorn.conf.py --bind "$host:$port" \
  --workers "${GUNICORN_WORKERS:-2}" --name "hub-web-$port" hub_server.wsgi:application
launch worker "$BIN/celery" --app hub_server worker --loglevel "${LOG_LEVEL:-INFO}" \
  --concurrency "${CELERY_WORKER_CONCURRENCY:-2}" --hostname "worker-$port@%h"
launch beat "$BIN/celery" --app hub_server beat --loglevel "${LOG_LEVEL:-INFO}" \
  --schedule "$RUN/celerybeat-schedule" --pidfile "$RUN/celerybeat.pid"
echo "stack in $STACK_DIR: http://$host:$port/ (logs in $LOG)"
