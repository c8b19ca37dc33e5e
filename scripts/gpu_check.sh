#!/usr/bin/env bash
# The GPU path checked end to end on this machine (README "GPU"): versions, CUDA training (fast/base,
# amp off/bf16/fp16, pair lists and neighbour tables), kernel maps, two-rank distill, resume, ONNX Runtime
# CPU/CUDA vs torch-CUDA vs TensorRT fp32/fp16, the GPU-resident Segmenter on the KITTI scan end to end
# (points in, labels out, copies included; the card's name), MaskCLIP's cost. Writes gpu_check.json + summary.md.
#
#   scripts/gpu_check.sh [--out runs/gpu_check] [--quick] [--only backends] [--scan path/to/scan.bin]
#
# Uses $PYTHON, else the repository's .venv (scripts/setup.sh), else python3. Without an NVIDIA GPU it
# refuses in one line and exits 2.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's relidar, installed or not
exec "$python" -c 'import sys; from relidar.cli.app import main; sys.argv[0] = "relidar"; main()' bench gpu "$@"
