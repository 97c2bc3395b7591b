#!/usr/bin/env bash
# Set multa up on a fresh machine, then run the main job on the bundled example:
# a virtual environment in .venv, PyTorch's CPU wheel, multa with its test
# extras, and `multa classify` of examples/example.pcap with the default model.
#
# PyTorch 2.13.0 is pinned here because its CPU wheel is what we test with;
# pyproject.toml accepts any torch 2.x from 2.2. Where pip's default index
# would give a CUDA build, set TORCH_INDEX_URL to PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_args=(--index-url "$TORCH_INDEX_URL")
fi
.venv/bin/python -m pip install -q "${torch_args[@]}" "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/multa classify examples/example.pcap --format table
