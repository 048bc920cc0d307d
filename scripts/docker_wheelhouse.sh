#!/usr/bin/env bash
# Fills docker/wheelhouse/ with a wheel of every Python package the image installs (torch's CPU
# build included) and moto[server] (the S3 server of the docker smoke), for an offline build:
# `docker build --build-arg PIP_OFFLINE=1 ...` (docs/operations.md, "Building without a registry").
# Runs where pip reaches the package index and finds the CPU torch wheel (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, PIP_FIND_LINKS or pip.conf).
# The wheels must suit the image's Python (3.11, Linux x86_64): run it with such a Python
# (PYTHON, default .venv/bin/python, else python3.11).
# Skipped when pyproject.toml and this script are unchanged since the last complete run.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${WHEELHOUSE:-docker/wheelhouse}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3.11 )}"
mkdir -p "$DEST"
key=$(cat pyproject.toml "$0" | sha256sum | cut -c1-16)
stamp="$DEST/.complete-$key"
if [ -e "$stamp" ]; then
  echo "wheelhouse: $DEST is up to date ($(find "$DEST" -name '*.whl' | wc -l) wheels)" >&2
  exit 0
fi
"$PYTHON" - <<'PY' >"$DEST/.requirements.txt"
import tomllib

print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
print("moto[server]")
# Debian bookworm's Python is 3.11.2: what markers leave out on a later 3.11 (redis needs
# async-timeout below 3.11.3).
print("async-timeout>=4.0.3")
PY
echo "wheelhouse: building wheels into $DEST" >&2
# pip, setuptools and wheel too: the editable install of the project builds without an index.
"$PYTHON" -m pip wheel --quiet --wheel-dir "$DEST" \
  torch==2.13.0 pip setuptools wheel -r "$DEST/.requirements.txt"
if find "$DEST" -name 'nvidia_*' -o -name 'torch-*' ! -name '*+cpu*' | grep -q .; then
  echo "wheelhouse: a CUDA build of torch slipped in: $(ls "$DEST" | grep -E '^(torch-|nvidia_)')" >&2
  exit 1
fi
rm -f "$DEST"/.complete-*
touch "$stamp"
echo "wheelhouse: $(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1)" >&2
