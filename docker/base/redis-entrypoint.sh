#!/bin/sh
# The interface of the redis image: `redis-server [flags]` without a config file listens on every
# address of the container (its network is the boundary), so protected mode is off unless asked.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  case " $* " in
    *" --protected-mode "*) ;;
    *) shift; set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
