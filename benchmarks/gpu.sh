#!/usr/bin/env bash
# Everything a CUDA machine checks, in one command (under 8 minutes on one H100):
#   1. the GPU tests (tests/gpu), 2. the DiT-S/2 benchmark table (benchmarks/gpu_bench.py),
#   3. per-block peak memory for B = 2..12, 4. the embedded default trained through the CLI on the GPU (local mode, shortened).
# Needs torch with CUDA; not Ray. omegaconf (for the CLI) is installed from ./.whl if present.
# Results go to $OUT when set, else benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$DEST/gpu_device.txt"
status=0
timeout 120 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$DEST/gpu_tests.log" || status=1
timeout 330 python3 benchmarks/gpu_bench.py --out "$DEST/gpu.json" 2>&1 | tee "$DEST/gpu_bench.log" || status=1
timeout 90 python3 benchmarks/gpu_bench.py --sweep-blocks --out "$DEST/gpu_blocks.json" || status=1
timeout 150 python3 -m dbparallel train --local runtime.gpus_per_block=1 train.steps=500 \
  run.dir=/tmp/dbparallel-gpu-run run.name=digits-dit-gpu 2>&1 | tee "$DEST/gpu_train.log" || status=1
cp /tmp/dbparallel-gpu-run/report.json "$DEST/gpu_train_report.json" 2>/dev/null
cp /tmp/dbparallel-gpu-run/samples.png "$DEST/gpu_samples.png" 2>/dev/null
exit $status
