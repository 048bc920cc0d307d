#!/bin/sh
# Renders /etc/nginx/templates/*.template into /etc/nginx/conf.d/ with envsubst, replacing only the
# variables set in the environment (nginx's own $variables stay), then runs the command.
set -eu
defined=$(env | cut -d= -f1 | sed 's/^/$/' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  target="/etc/nginx/conf.d/$(basename "$template" .template)"
  envsubst "$defined" < "$template" > "$target"
done
exec "$@"
