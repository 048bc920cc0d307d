#!/usr/bin/env bash
# Which processes of the stack run, and whether the web answers /readyz. Exit 0 when all do.
#
#   scripts/stack/status.sh [DIR]
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ok=0
for role in $ROLES; do
  if pid="$(stack_pid "$role")"; then
    echo "$role: running (pid $pid)"
  else
    echo "$role: stopped"
    ok=1
  fi
done
if [ -f "$STACK_ENV" ]; then
  load_env
  url="http://${STACK_HOST:-127.0.0.1}:${STACK_PORT:-8100}/readyz"
  if body="$("$PY" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$url" 2>&1)"; then
    echo "readyz: $body"
  else
    echo "readyz: not ready ($url)"
    ok=1
  fi
fi
exit $ok
