"""Measure the candidates for the fused CPU sparse convolution (relidar.core.backends.fused) per convolution.

    python scripts/fused_candidates.py --scan ../shared/data/kitti/000000/velodyne.bin --json candidates.json

The convolutions of the ``fast`` profile that carry most of its multiply-adds, on the scan's real pair
lists (0.1 m voxels), with random weights, each computed four ways and checked against the first:

* ``plain_loops``: numba, output-stationary over the [V, 27] neighbour table, scalar loops (the kernel
  measured for issue 14);
* ``blas_per_offset``: numpy, per kernel offset a gather of the input rows, one sgemm, a scatter-add into
  the output (what the PyTorch and ONNX Runtime graphs do, per-offset copies and all);
* ``table_sgemm``: numpy, the dense [V, 27 * Cin] gather of the neighbour table and one sgemm (the GPU
  formulation: every empty neighbour multiplied too);
* ``fused``: relidar.core.fused_loops.sparse_conv, the kernel the backend runs.

Times are one thread's CPU time (``time.thread_time``), the minimum of ``--repeat`` calls: on a shared
machine that is far steadier than wall time, and every candidate runs on one thread here. The module
docstring of relidar.core.backends.fused holds the table this prints.
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads its BLAS: the times below are the calling thread's CPU time, which
# would not count the work of BLAS's own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from numba import njit

from relidar.core import fused_loops
from relidar.core.backends.fused import Conv, scan_pairs
from relidar.core.kernel_maps import build_neighbour_tables_numpy
from relidar.core.preprocess import Preprocessor
from relidar.core.scan_io import read_scan
from relidar.core.voxelize import VoxelGrid

# (level, Cin, Cout) of the fast profile's heaviest submanifold convolutions, level 0 first
CONVS = ((0, 4, 16), (1, 16, 16), (1, 40, 24), (1, 24, 24), (2, 64, 32), (3, 96, 48))


@njit(cache=True, nogil=True)
def plain_loops(x, weight, table, out):
    v = table.shape[0]
    for r in range(v):
        for j in range(out.shape[1]):
            out[r, j] = 0.0
        for k in range(27):
            n = table[r, k]
            if n == v:
                continue
            for i in range(x.shape[1]):
                xv = x[n, i]
                for j in range(out.shape[1]):
                    out[r, j] += xv * weight[k, i, j]


def blas_per_offset(x, weight, pairs, out):
    out[:] = x @ weight[13]
    for k, (dst, src) in enumerate(pairs):
        out[dst] += x[src] @ weight[k]  # the rows of one offset are distinct: a plain fancy-index add is exact
        out[src] += x[dst] @ weight[26 - k]


def table_sgemm(x, weight, table, out):
    padded = np.concatenate([x, np.zeros((1, x.shape[1]), np.float32)])
    out[:] = padded[table].reshape(len(table), -1) @ weight.reshape(-1, weight.shape[2])


def cpu_ms(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best * 1e3


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    return {"cpu": model, "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
            "blas": np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]}


CANDIDATES = ("plain_loops", "blas_per_offset", "table_sgemm", "fused")


def measure(maps, table, pairs, level: int, cin: int, cout: int, rng, repeat: int) -> dict:
    """One convolution four ways: CPU ms of each and its largest difference from ``plain_loops``."""
    v = maps.num_voxels(level)
    x = rng.standard_normal((v, cin)).astype(np.float32)
    weight = (rng.standard_normal((27, cin, cout)) / np.sqrt(27 * cin)).astype(np.float32)
    conv = Conv.of("subm", level, weight, np.zeros(cout, np.float32))
    outs = {name: np.empty((v, cout), np.float32) for name in CANDIDATES}
    calls = {
        "plain_loops": lambda: plain_loops(x, weight, table, outs["plain_loops"]),
        "blas_per_offset": lambda: blas_per_offset(x, weight, maps.subm[level], outs["blas_per_offset"]),
        "table_sgemm": lambda: table_sgemm(x, weight, table, outs["table_sgemm"]),
        "fused": lambda: fused_loops.sparse_conv(x, conv.weight, conv.bias, pairs.index, pairs.offsets, conv.tiles,
                                                 outs["fused"], np.zeros((0, 0), np.float32), False, 0, v, 1024),
    }
    row = {"level": level, "cin": cin, "cout": cout, "voxels": v, "mmac": float(pairs.offsets[:, 2].sum()) * cin * cout / 1e6}
    for name, call in calls.items():
        row[f"{name}_ms"] = cpu_ms(call, repeat)
        row[f"{name}_max_abs_diff"] = float(np.abs(outs[name] - outs["plain_loops"]).max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, required=True)
    parser.add_argument("--voxel-size", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    grid = VoxelGrid(args.voxel_size, (-51.2, -51.2, -4.0), (51.2, 51.2, 2.4))
    inputs = Preprocessor(grid, ("x", "y", "z", "intensity"), 5)(read_scan(args.scan))
    tables = build_neighbour_tables_numpy(inputs.maps)
    pairs = scan_pairs(inputs.maps)
    fused_loops.warm_up()
    rng = np.random.default_rng(0)
    rows = []
    for level, cin, cout in CONVS:
        row = measure(inputs.maps, tables.subm[level], pairs["subm", level], level, cin, cout, rng, args.repeat)
        rows.append(row)
        print(f"| {level}, {cin} -> {cout} | {row['mmac']:.0f} | " + " | ".join(
            f"{row[f'{n}_ms']:.1f}" for n in CANDIDATES) + " |", flush=True)
    result = {"machine": machine(), "scan": str(args.scan), "voxels": inputs.num_voxels, "convs": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
