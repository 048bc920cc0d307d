# Shared by start.sh, stop.sh and status.sh: paths, the env file and the pid files of one stack.
# A stack lives in one folder DIR: DIR/stack.env (settings), DIR/run/*.pid, DIR/log/*.log.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="$(realpath -m "${1:-${STACK_DIR:-$ROOT/var/stack}}")"
STACK_ENV="${STACK_ENV:-$STACK_DIR/stack.env}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="$(dirname "$PY")"
RUN="$STACK_DIR/run"
LOG="$STACK_DIR/log"
ROLES="web worker beat"

# The pid of ROLE when its process is alive (and is still ours), else nothing.
stack_pid() {
  local file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be one of ours.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'gunicorn|celery' || return 1
  echo "$pid"
}

load_env() {
  set -a
  # shellcheck disable=SC1090
  . "$STACK_ENV"
  set +a
  export DJANGO_SETTINGS_MODULE=hub_server.settings
}
