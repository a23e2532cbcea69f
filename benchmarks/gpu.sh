#!/usr/bin/env bash
# What a CUDA machine measures, in one command. Needs torch with CUDA, not Ray (the Ray-free
# layers only); omegaconf (for the config loader the tests use) is installed from ./.whl:
# run benchmarks/gpu_wheels.sh first where PyPI is reachable, and carry .whl to the machine.
#
#   bash benchmarks/gpu.sh                  # parts "tests speed": 8.5 minutes at most
#   bash benchmarks/gpu.sh bench sweep      # any parts, in the order given
#
# Parts, each under its own time limit; one that fails does not stop the next:
#   tests  the GPU tests (tests/gpu: CPU/GPU agreement, fused AdamW, MFU, no host sync in a
#          step, flash attention, pinned batches, images encoded into latents that train and
#          decode on the GPU; last the compiles: the default mode, then
#          CUDA graphs with a step in two pieces), 2.5 min at most, each test named as it ends
#          and each failure's traceback short
#   speed  benchmarks/gpu_speed.py: DiT-S/2 and DiT-B/2, one block (B=3) and end to end,
#          tf32 vs bf16, eager vs compiled (and the bf16 blocks with CUDA graphs): step time,
#          samples/s, peak memory, MFU; sampling with and without compile. Each configuration
#          in its own process, the MFU targets' rows first, 5.8 min at most
#   modes  the bf16 blocks (DiT-S/2, DiT-B/2) eager, compiled in torch's default mode, with
#          CUDA graphs (reduce-overhead) and with tuned kernels (max-autotune-no-cudagraphs),
#          side by side, to choose train.compile_mode; into modes/ of the results, 9 minutes
#          (a session with device time left after the default parts)
#   bench  benchmarks/gpu_bench.py: DiT-S/2 memory per block, blocks sharing one card,
#          sampling against end to end, 5.5 min
#   sweep  per-block allocator peak for B = 2..12, 1.5 min
#   train  the embedded default trained through the CLI on the GPU (local mode), 2.5 min
# Results go to $OUT when set, else benchmarks/results/; exit status 1 if any part failed.
# A copy of the working tree without its git history records the commit it was measured with
# where DBPARALLEL_COMMIT=$(git rev-parse HEAD) is given in front of the command.
# The default parts leave 5 files there, "tests speed modes" 8 (a device call brings back 8).
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
source benchmarks/gpu_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} | tee "$DEST/gpu_device.txt"
status=0
for part in ${*:-tests speed}; do
  echo "== $part"
  case $part in
    tests)
      timeout 150 python3 -m pytest -v --tb=short -o faulthandler_timeout=90 -m gpu tests/gpu \
        -p no:cacheprovider 2>&1 \
        | tee "$DEST/gpu_tests.log" || status=1 ;;
    speed)
      timeout 350 python3 benchmarks/gpu_speed.py --out "$DEST" --budget-s 330 2>&1 \
        | tee "$DEST/gpu_speed.log" || status=1 ;;
    modes)
      timeout 560 python3 benchmarks/gpu_speed.py --only block/bf16 --out "$DEST/modes" \
        --budget-s 540 2>&1 | tee "$DEST/gpu_modes.log" || status=1 ;;
    bench)
      timeout 330 python3 benchmarks/gpu_bench.py --out "$DEST/gpu.json" 2>&1 \
        | tee "$DEST/gpu_bench.log" || status=1 ;;
    sweep)
      timeout 90 python3 benchmarks/gpu_bench.py --sweep-blocks --out "$DEST/gpu_blocks.json" \
        2>&1 | tee "$DEST/gpu_sweep.log" || status=1 ;;
    train)
      timeout 150 python3 -m dbparallel train --local runtime.gpus_per_block=1 \
        runtime.assembly_gpus=1 train.steps=500 metrics.port=0 run.dir=/tmp/dbparallel-gpu-run \
        run.name=digits-dit-gpu 2>&1 | tee "$DEST/gpu_train.log" || status=1
      cp /tmp/dbparallel-gpu-run/report.json "$DEST/gpu_train_report.json" 2>/dev/null
      cp /tmp/dbparallel-gpu-run/samples.png "$DEST/gpu_samples.png" 2>/dev/null ;;
    *)
      echo "gpu.sh: unknown part '$part' (tests, speed, modes, bench, sweep, train)" >&2
      status=1 ;;
  esac
done
exit $status
