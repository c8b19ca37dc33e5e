#!/usr/bin/env bash
# What can only be checked on a machine with an NVIDIA GPU; run from the repository root there.
# Writes JSON under runs/gpu_check/ (the figures the README quotes for GPUs come from here).
set -euo pipefail
DATA="${RELIDAR_SHARED_DATA:-../shared/data}"
OUT=runs/gpu_check
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"

# Training throughput: data loading (cache read, voxelize, kernel maps) in DataLoader workers with
# pinned memory, forward+backward and the online teacher (ViT-B/16) on CUDA next to the CPU; the
# training loop's wait for data; the bottleneck.
relidar bench train --dataset "$DATA/kitti/000000" --device cpu,cuda --workers 0,2,4 --batch-size 4 \
    --steps 10 --json "$OUT/bench_train.json"
