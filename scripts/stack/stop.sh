#!/usr/bin/env bash
# Stop the stack started by start.sh: TERM to each process of its pid files (gunicorn and the
# worker finish their requests and tasks), KILL after STACK_STOP_TIMEOUT seconds (30).
#
#   scripts/stack/stop.sh [DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pids=()
for role in $ROLES; do
  if pid="$(stack_pid "$role")"; then
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    echo "stopping $role (pid $pid)"
  fi
done
deadline=$((SECONDS + ${STACK_STOP_TIMEOUT:-30}))
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "pid $pid still alive after ${STACK_STOP_TIMEOUT:-30}s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
done
for role in $ROLES; do rm -f "$RUN/$role.pid"; done
echo "stack in $STACK_DIR stopped"
