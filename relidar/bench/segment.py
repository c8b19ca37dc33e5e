"""End-to-end Segmenter latency on one scan, next to the same network run by spconv in PyTorch.

Per repetition (after warm-up) the Segmenter's own stage timings are recorded: preprocess (numpy
voxelize + kernel maps), network (the backend), postprocess, total. The reference times the same
job with spconv on the same scan in the same process: numpy voxelize, the BN-folded spconv twin of
the bundle's student (relidar.bench.spconv_reference) incl. the head, cosine classification and
devoxelization to points. Peak RSS is read before the reference runs (torch is not imported by the
onnxruntime path, so it is the runtime's footprint).

``compare_formulations`` also times the other sparse-convolution graph (pair lists vs neighbour tables)
on the same backend, interleaved repetition by repetition in the same process: which one is faster
depends on the cores (on 2 cores pair lists, on 16 the tables), and timings of separate processes on a
shared machine drift more than the difference.

``lanes`` (N > 1) measures what the node's lanes buy: rounds in turn of N calls one after the other on
the Segmenter above, and N calls at once from N threads on a second Segmenter over the same bundle
with :func:`relidar.core.segmenter.lane_threads` intra-op threads each; scans per second both ways
(the median round), the per-call total under lanes and the label agreement.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from relidar.core.segmenter import Segmenter, lane_threads
from relidar.core.timing import percentile, percentiles, time_interleaved

STAGES = ("preprocess", "network", "postprocess", "total")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def resize_scan(points: np.ndarray, n: int, seed: int = 0, jitter: float = 0.02) -> np.ndarray:
    """``n`` points from a real scan: a random subset, or the scan repeated with Gaussian jitter
    (``jitter`` metres) on the copies when ``n`` exceeds it."""
    rng = np.random.default_rng(seed)
    if n <= len(points):
        return points[np.sort(rng.choice(len(points), n, replace=False))]
    extra = points[rng.integers(0, len(points), n - len(points))].copy()
    extra[:, :3] += rng.normal(0.0, jitter, (len(extra), 3)).astype(points.dtype)
    return np.concatenate([points, extra], axis=0)


@dataclass
class SegmentBenchResult:
    points: int
    voxels: int
    backend: str
    formulation: str
    profile: str
    voxel_size: float
    repeat: int
    preprocess_ms_p50: float
    preprocess_ms_p90: float
    network_ms_p50: float
    network_ms_p90: float
    postprocess_ms_p50: float
    postprocess_ms_p90: float
    total_ms_p50: float
    total_ms_p90: float
    peak_rss_mb: float
    spconv_total_ms_p50: float | None = None
    spconv_voxelize_ms_p50: float | None = None
    spconv_network_ms_p50: float | None = None
    ratio: float | None = None
    threads: int | None = None
    load_average: list[float] = field(default_factory=list)
    cpu_count: int = 0
    sweep: list[dict] = field(default_factory=list)
    # compare_formulations: per graph, p50 of each stage (interleaved runs), and the label agreement
    formulations: dict[str, dict[str, float]] = field(default_factory=dict)
    # lanes > 1: single calls vs N concurrent calls, interleaved (see the module docstring)
    lanes: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def time_segmenter(seg: Segmenter, points: np.ndarray, repeat: int) -> dict[str, list[float]]:
    return stages_interleaved({"": seg}, points, repeat)[""]


def stages_interleaved(segs: dict[str, Segmenter], points: np.ndarray, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Each Segmenter's own stage timings, once per repetition, in turn, after one warm-up each: they see the
    same machine (the stages are timed inside the Segmenter, so no wall clock runs here)."""
    for seg in segs.values():
        seg(points)
    runs = {name: {s: [] for s in STAGES} for name in segs}
    for _ in range(repeat):
        for name, seg in segs.items():
            t = seg(points).timings_ms
            for s in STAGES:
                runs[name][s].append(t[s])
    return runs


def time_lanes(single: Segmenter, concurrent: Segmenter, points: np.ndarray, lanes: int,
               rounds: int) -> dict[str, float]:
    """Scans per second of ``lanes`` calls one after the other on ``single`` and of ``lanes`` calls at once
    on ``concurrent`` (one thread each), round by round in turn; medians over the rounds."""
    from concurrent.futures import ThreadPoolExecutor

    want = single(points).labels
    concurrent(points)
    call_ms: list[float] = []
    agreement = [1.0]
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="relidar-lane") as pool:
        def one_by_one() -> None:
            for _ in range(lanes):
                single(points)

        def at_once() -> None:
            results = list(pool.map(concurrent, [points] * lanes))
            call_ms.extend(r.timings_ms["total"] for r in results)
            agreement.extend(float((r.labels == want).mean()) for r in results)

        rounds_ms = time_interleaved({"single": one_by_one, "lanes": at_once}, rounds)

    def rate(kind: str) -> float:
        return percentile([lanes / (ms / 1e3) for ms in rounds_ms[kind].samples_ms], 50)

    return {"lanes": float(lanes), "single_scans_per_s": rate("single"), "lanes_scans_per_s": rate("lanes"),
            "lanes_call_total_ms_p50": percentile(call_ms, 50), "label_agreement": min(agreement)}


def time_spconv(bundle_dir: Path, points: np.ndarray, text: np.ndarray, logit_scale: float, repeat: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """The spconv reference on the same scan (see the module docstring)."""
    import torch

    from relidar.bench.spconv_reference import SpconvStudent, coords_tensor
    from relidar.core.bundle import BundleError, load_bundle
    from relidar.core.preprocess import Preprocessor
    from relidar.model.network import fold_batchnorm
    from relidar.model.weights import load_student

    bundle = load_bundle(bundle_dir)
    weights = bundle.manifest.student.weights
    if not weights:
        raise BundleError("the spconv reference needs student weights in the bundle", path=bundle_dir,
                          hint="re-export it without --no-weights, or pass --no-spconv")
    student = load_student(bundle.path(weights)).eval()
    twin = SpconvStudent(fold_batchnorm(student)).eval()
    preprocessor = Preprocessor.of(student.config)
    text_t = torch.from_numpy(text)

    voxelized = []

    def voxelize() -> None:
        voxelized[:] = [preprocessor.voxelize(points)]

    def network() -> None:
        vox = voxelized[0]
        with torch.inference_mode():
            emb = twin(torch.from_numpy(vox.features), coords_tensor(vox.coords), vox.grid_shape, vox.batch_size)
            emb = torch.nn.functional.normalize(emb, dim=1)
            prob = torch.softmax(logit_scale * emb @ text_t.t(), dim=1)
            score, label = prob.max(dim=1)
            p2v = torch.from_numpy(vox.point_to_voxel)
            idx = p2v.clamp(min=0)
            labels = torch.where(p2v >= 0, label[idx], torch.full_like(idx, -1))
            scores = torch.where(p2v >= 0, score[idx], torch.zeros_like(score[idx]))
            labels.numpy(), scores.numpy()

    # one round = voxelize then the network on its voxels, each timed
    timed = time_interleaved({"voxelize": voxelize, "network": network}, repeat, warmup)
    runs = {stage: list(t.samples_ms) for stage, t in timed.items()}
    runs["total"] = [a + b for a, b in zip(runs["voxelize"], runs["network"])]
    return runs


def run_segment_bench(bundle_dir: Path, points: np.ndarray, backend: str = "onnxruntime", device: str = "cpu",
                      repeat: int = 10, spconv: bool = True, sweep_sizes: Sequence[int] = (),
                      sweep_repeat: int = 3, threads: int | None = None, formulation: str | None = None,
                      compare_formulations: bool = False, lanes: int = 1,
                      on_step: Callable[[str], None] | None = None) -> SegmentBenchResult:
    import os

    step = on_step or (lambda _msg: None)
    seg = Segmenter(bundle_dir, backend=backend, device=device, threads=threads, formulation=formulation)
    step(f"timing the segmenter ({seg.backend}) on {len(points)} points")
    runs = time_segmenter(seg, points, repeat)
    voxels = seg.preprocess(points).num_voxels
    spec = seg.bundle.manifest.student
    stage_ms: dict[str, float] = {}
    for s in STAGES:
        stage_ms.update(percentiles(runs[s], (50, 90), f"{s}_ms"))
    result = SegmentBenchResult(
        points=int(len(points)), voxels=voxels, backend=seg.backend, formulation=seg.formulation, profile=spec.profile,
        voxel_size=spec.voxel_size,
        repeat=repeat, **stage_ms,
        peak_rss_mb=_peak_rss_mb(), threads=threads, load_average=[round(x, 2) for x in os.getloadavg()], cpu_count=os.cpu_count() or 0)
    for n in sweep_sizes:
        step(f"sweep: {n} points")
        scan = resize_scan(points, int(n))
        r = time_segmenter(seg, scan, sweep_repeat)
        result.sweep.append({"points": int(n), "voxels": seg.preprocess(scan).num_voxels,
                             **{f"{s}_ms_p50": percentile(r[s], 50) for s in STAGES}})
    if spconv:
        from relidar.bench.spconv_reference import spconv_available

        if spconv_available():
            step("timing the spconv reference on the same scan")
            ref = time_spconv(bundle_dir, points, seg.vocabulary.embeddings, seg.bundle.manifest.logit_scale, repeat)
            result.spconv_total_ms_p50 = percentile(ref["total"], 50)
            result.spconv_voxelize_ms_p50 = percentile(ref["voxelize"], 50)
            result.spconv_network_ms_p50 = percentile(ref["network"], 50)
            result.ratio = result.total_ms_p50 / result.spconv_total_ms_p50
    if compare_formulations:
        other = "table" if seg.formulation == "pairs" else "pairs"
        step(f"timing the {seg.formulation} and {other} graphs interleaved")
        segs = {seg.formulation: seg,
                other: Segmenter(bundle_dir, backend=backend, device=device, threads=threads, formulation=other)}
        runs = stages_interleaved(segs, points, repeat)
        labels = {name: s(points).labels for name, s in segs.items()}
        for name in segs:
            result.formulations[name] = {f"{s}_ms_p50": percentile(runs[name][s], 50) for s in STAGES}
            result.formulations[name]["label_agreement"] = float((labels[name] == labels[seg.formulation]).mean())
    if lanes > 1:
        per_lane = lane_threads(lanes)
        step(f"timing {lanes} concurrent calls ({per_lane} thread(s) each) against single calls, interleaved")
        concurrent = Segmenter(bundle_dir, backend=backend, device=device, threads=per_lane, formulation=seg.formulation)
        result.lanes = time_lanes(seg, concurrent, points, lanes, repeat)
        result.lanes["threads_per_call"] = float(per_lane or 0)
    return result


def plot_sweep(result: SegmentBenchResult, path: Path) -> Path:
    """Cost vs scan size: one line per stage, to PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from relidar.core.atomic import atomic_path

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs = [r["points"] / 1000 for r in result.sweep]
    for stage in STAGES:
        ax.plot(xs, [r[f"{stage}_ms_p50"] for r in result.sweep], marker="o", label=stage)
    ax.axhline(100.0, color="grey", linestyle="--", linewidth=1, label="10 Hz budget")
    ax.set_xlabel("points per scan (thousands)")
    ax.set_ylabel("ms (p50)")
    ax.set_title(f"Segmenter cost vs scan size ({result.backend}, {result.profile}, {result.voxel_size} m)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
