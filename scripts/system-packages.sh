#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: installed once, when missing (make setup runs this).
# chromium: browser tests (Playwright drives /usr/bin/chromium); docker-compose: validates
# docker-compose.yml; wrk: HTTP benchmarks; nginx-light: tests the nginx config of docker/;
# caddy: tests docker/caddy/Caddyfile (HTTPS in front, compose profile tls)
set -euo pipefail
wanted=(chromium docker-compose wrk nginx-light caddy)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "system-packages: please install ${missing[*]} (apt-get); some tests will be skipped" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "system-packages: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
