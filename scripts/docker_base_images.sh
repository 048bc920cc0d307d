#!/usr/bin/env bash
# Base images without an image registry (docs/operations.md, "Building without a registry"):
# a Debian root file system from debootstrap, imported, and the python, nginx, postgres and redis
# images of docker/base/Dockerfile built on it with apt-get.
#
#   scripts/docker_base_images.sh [PREFIX]     (default PREFIX: local; images PREFIX-debian:bookworm,
#                                                PREFIX-python:3.11-bookworm, PREFIX-nginx:bookworm,
#                                                PREFIX-postgres:15-bookworm, PREFIX-redis:bookworm)
#
# DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITE (default bookworm), APT_PROXY
# (default: this host's Acquire::http::Proxy), CACHE_DIR (default var/docker) where the root file
# system tarball is kept: it is made again only when suite, mirror or ROOTFS_FORMAT change.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${1:-local}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${CACHE_DIR:-var/docker}"
if [ -z "${APT_PROXY+set}" ]; then
  APT_PROXY=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n 1)
fi
mkdir -p "$CACHE_DIR"

# Bump ROOTFS_FORMAT when the making of the root file system below changes (not for the image
# builds: docker's layer cache follows docker/base/ by itself).
ROOTFS_FORMAT=1
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$ROOTFS_FORMAT" | sha256sum | cut -c1-12)
tarball="$CACHE_DIR/rootfs-$SUITE-$key.tar"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "base images: debootstrap $SUITE from $MIRROR" >&2
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
    tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
    echo "debootstrap failed (log: $CACHE_DIR/debootstrap.log)" >&2
    exit 1
  }
  # Security and point-release updates too; no downloaded packages or lists in the image.
  security="${MIRROR%/debian}/debian-security"
  {
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    echo "deb $security $SUITE-security main"
  } >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
  find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
fi

debian="$PREFIX-debian:$SUITE"
label="rootfs=$key"
if [ "$(docker image inspect -f '{{index .Config.Labels "org.adapterhub.rootfs"}}' "$debian" 2>/dev/null)" != "$key" ]; then
  echo "base images: docker import $tarball as $debian" >&2
  docker import --change "LABEL org.adapterhub.rootfs=$key" --change 'CMD ["bash"]' "$tarball" "$debian" >/dev/null
fi

build() {  # target tag
  echo "base images: $2" >&2
  local log="$CACHE_DIR/build-base-$1.log"
  docker build --force-rm -f docker/base/Dockerfile --target "$1" -t "$2" \
    --build-arg DEBIAN_IMAGE="$debian" --build-arg APT_PROXY="$APT_PROXY" \
    --label "org.adapterhub.base=$label" docker/base >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    echo "building $2 failed (log: $log)" >&2
    exit 1
  }
}
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
build python "$PREFIX-python:3.11-$SUITE"
build nginx "$PREFIX-nginx:$SUITE"
build postgres "$PREFIX-postgres:15-$SUITE"
build redis "$PREFIX-redis:$SUITE"
