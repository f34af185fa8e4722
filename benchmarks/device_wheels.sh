#!/usr/bin/env bash
# Wheels the GPU machine's image lacks for benchmarks/dpo_step.py (it has torch, peft, accelerate,
# transformers, safetensors, rich, numpy): diffusers, pluggy, torchao and diffusers' importlib_metadata.
# Versions are the ones installed here, so the device runs the code the tests ran. Writes .whl/ (ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
version() { "$python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for name in diffusers pluggy torchao importlib_metadata zipp; do
  spec="$name==$(version "$name")"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
