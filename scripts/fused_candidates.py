"""Measure the candidates for the fused CPU sparse convolution (relidar.core.backends.fused) per convolution.

    python scripts/fused_candidates.py --scan ../shared/data/kitti/000000/velodyne.bin --json candidates.json
    python scripts/fused_candidates.py --scan ../shared/data/kitti/000000/velodyne.bin --bundle BUNDLE --threads 2

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

With ``--bundle``, the whole network stage of the Segmenter (the student, the classifier, devoxelization)
is also timed on the scan, wall clock, round by round in turn (relidar.bench.segment.stages_interleaved)
for the ``fused``, ``onnxruntime`` and ``torch`` backends at ``--threads`` threads each, then the spconv
twin of the same weights (relidar.bench.segment.time_spconv, same threads) back to back.
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


def networks(bundle: Path, points: np.ndarray, threads: int, repeat: int) -> dict:
    """Network-stage p50 (ms) of each backend, interleaved, and of spconv after them (module docstring)."""
    import torch

    from relidar.bench.segment import stages_interleaved, time_spconv
    from relidar.core.segmenter import Segmenter
    from relidar.core.timing import percentile

    torch.set_num_threads(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)  # read by nothing loaded yet but BLAS pools created later
    segs = {name: Segmenter(bundle, backend=name, threads=threads) for name in ("fused", "onnxruntime", "torch")}
    runs = stages_interleaved(segs, points, repeat)
    labels = {name: seg(points).labels for name, seg in segs.items()}
    seg = segs["onnxruntime"]
    ref = time_spconv(bundle, points, seg.vocabulary.embeddings, seg.bundle.manifest.logit_scale, repeat)
    out = {f"{name}_network_ms_p50": percentile(runs[name]["network"], 50) for name in segs}
    out |= {f"{name}_total_ms_p50": percentile(runs[name]["total"], 50) for name in segs}
    out["spconv_network_ms_p50"] = percentile(ref["network"], 50)
    out["fused_labels_equal_onnxruntime"] = float((labels["fused"] == labels["onnxruntime"]).mean())
    out |= {"threads": threads, "repeat": repeat, "load_average": [round(v, 2) for v in os.getloadavg()]}
    return out


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
    parser.add_argument("--bundle", type=Path, help="also time the backends' network stage on this bundle")
    parser.add_argument("--threads", type=int, default=2, help="threads of every backend (and torch) with --bundle")
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
    if args.bundle:
        result["network"] = networks(args.bundle, read_scan(args.scan), args.threads, args.repeat)
        print(json.dumps(result["network"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
