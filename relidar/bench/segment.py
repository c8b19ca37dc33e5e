"""End-to-end Segmenter latency on one scan, next to every other way to run the same network, in one run.

Benchmarks that cannot flatter us (issue 22): every side is timed in the same rounds, one call each in turn
(``relidar.core.timing.time_interleaved``, one warm-up call each first), on the same scan, weights and class
embeddings, at one thread count, and the machine goes into the JSON (relidar.bench.machine):

* ours: the Segmenter asked for (``backend``, its top-level keys) and every other backend the registry has
  here (``relidar.core.backends.available_backends``: a backend added there is measured without being named
  here), each at its device's formulation, or in both graphs with ``compare_formulations`` (pair lists vs
  neighbour tables: which is faster depends on the cores, and timings of separate processes on a shared
  machine drift more than the difference), the torch backend then also with its other pipeline (host
  preprocessing vs the device-resident path). A backend that cannot load here is listed in ``load_errors``.
* the PyTorch forward of the same network: the torch backend on the host-made feed (``pytorch_entry`` names
  the entry; its "network" is the BN-folded student graph in torch, what the ONNX graph was exported from);
* spconv (relidar.bench.spconv_reference): numpy voxelize, the BN-folded spconv twin of the bundle's student
  incl. the head, cosine classification and devoxelization to points. Its "network" builds its own index
  pairs (ours has them from "preprocess"), so both totals are reported too.

Threads: ``threads`` (default: one per physical core) is every side's count: ONNX Runtime's intra-op threads,
``torch.set_num_threads`` for the torch backend and spconv for the whole run. spconv 2.3's CPU kernels race
with more than one torch thread (relidar.bench.spconv_reference.torch_threads), so spconv is *timed* at the
common count but its labels, for ``spconv_label_agreement``, come from one single-threaded call; with
``threads=1`` every side is both timed and correct.

Each entry has its stage p50s (the Segmenter's own stage timings: preprocess = voxelize + kernel maps,
network = the backend, postprocess, total) and its label agreement with the asked-for Segmenter. Peak RSS is
read after that Segmenter's warm-up call and before anything else is loaded (torch is not imported by the
onnxruntime path, so it is the runtime's footprint).

``lanes`` (N > 1) measures what the node's lanes buy: rounds in turn of N calls one after the other on
the Segmenter above, and N calls at once from N threads on a second Segmenter over the same bundle
with :func:`relidar.core.segmenter.lane_threads` intra-op threads each; scans per second both ways
(the median round), the per-call total under lanes and the label agreement.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from relidar.core.errors import RelidarError
from relidar.core.segmenter import Segmenter, lane_threads
from relidar.core.timing import percentile, percentiles, time_interleaved

STAGES = ("preprocess", "network", "postprocess", "total")
SPCONV = "spconv"


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
    threads: int
    device_pipeline: bool = False
    spconv_total_ms_p50: float | None = None
    spconv_voxelize_ms_p50: float | None = None
    spconv_network_ms_p50: float | None = None
    ratio: float | None = None                    # total p50, ours / spconv
    network_vs_spconv: float | None = None        # network p50, ours / spconv's (which includes its index pairs)
    network_vs_pytorch: float | None = None       # network p50, ours / the PyTorch forward of the same graph
    spconv_label_agreement: float | None = None   # spconv single-threaded vs ours (module docstring)
    pytorch_entry: str | None = None
    load_average: list[float] = field(default_factory=list)
    cpu_count: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    # every side timed in the same rounds: stage p50s, label agreement with ours, kind (ours / reference)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    sweep: list[dict] = field(default_factory=list)
    # compare_formulations: per graph of the asked-for backend, p50 of each stage and the label agreement
    formulations: dict[str, dict[str, float]] = field(default_factory=dict)
    # lanes > 1: single calls vs N concurrent calls, interleaved (see the module docstring)
    lanes: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


StageCall = Callable[[], dict[str, float]]  # one labelled scan; returns its stage timings (ms)


def time_stages(calls: dict[str, StageCall], repeat: int, warmup: int = 1) -> dict[str, dict[str, list[float]]]:
    """Each call's own stage timings, once per round, in turn (``time_interleaved``), after ``warmup`` calls each:
    they all see the same machine."""
    runs: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in calls}

    def recorded(name: str, fn: StageCall) -> Callable[[], None]:
        def call() -> None:
            timings = fn()
            for stage in STAGES:
                runs[name][stage].append(timings[stage])
        return call

    for _ in range(warmup):
        for fn in calls.values():
            fn()
    time_interleaved({name: recorded(name, fn) for name, fn in calls.items()}, repeat)
    return runs


def time_segmenter(seg: Segmenter, points: np.ndarray, repeat: int) -> dict[str, list[float]]:
    return time_stages({"": lambda: seg(points).timings_ms}, repeat)[""]


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


class SpconvReference:
    """The spconv reference on the bundle's weights (see the module docstring): labels and stage timings."""

    def __init__(self, bundle_dir: Path, text: np.ndarray, logit_scale: float) -> None:
        import torch

        from relidar.bench.spconv_reference import SpconvStudent
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
        self._torch = torch
        self._twin = SpconvStudent(fold_batchnorm(student)).eval()
        self._preprocessor = Preprocessor.of(student.config)
        self._text = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))
        self._logit_scale = float(logit_scale)

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """(labels [N] int32, stage timings): numpy voxelize as "preprocess", the rest as "network"."""
        from relidar.bench.spconv_reference import coords_tensor

        torch = self._torch
        t0 = time.perf_counter()
        vox = self._preprocessor.voxelize(points)
        t1 = time.perf_counter()
        with torch.inference_mode():
            emb = self._twin(torch.from_numpy(vox.features), coords_tensor(vox.coords), vox.grid_shape, vox.batch_size)
            emb = torch.nn.functional.normalize(emb, dim=1)
            prob = torch.softmax(self._logit_scale * emb @ self._text.t(), dim=1)
            score, label = prob.max(dim=1)
            p2v = torch.from_numpy(vox.point_to_voxel)
            idx = p2v.clamp(min=0)
            labels = torch.where(p2v >= 0, label[idx], torch.full_like(idx, -1)).numpy().astype(np.int32)
            torch.where(p2v >= 0, score[idx], torch.zeros_like(score[idx])).numpy()
        t2 = time.perf_counter()
        network = (t2 - t1) * 1e3
        return labels, {"preprocess": (t1 - t0) * 1e3, "network": network, "postprocess": 0.0,
                        "total": (t2 - t0) * 1e3}


def entry_name(seg: Segmenter) -> str:
    """``backend-formulation``, ``-resident`` for the device-resident path: an entry's name in the JSON."""
    return f"{seg.backend}-{seg.formulation}" + ("-resident" if seg.device_pipeline else "")


def _segmenters(bundle_dir: Path, device: str, threads: int, primary: Segmenter, compare_formulations: bool,
                on_step: Callable[[str], None]) -> tuple[dict[str, Segmenter], str | None, dict[str, str]]:
    """Every other available backend (x formulation x pipeline, see the module docstring) as Segmenters by entry
    name, the entry that is the PyTorch forward, and the load errors."""
    from relidar.core.backends import available_backends, backend_formulations

    variants: list[tuple[str, str | None, bool | None]] = []
    for name in available_backends(device):  # None: the Segmenter's default for this device
        for formulation in (backend_formulations(name) if compare_formulations else (None,)):
            variants += [(name, formulation, resident) for resident in ((False, True) if compare_formulations else (None,))]
    pytorch_variant = ("torch", primary.formulation, False)  # the PyTorch forward: the graph on the host's feed
    variants.append(pytorch_variant)
    segs = {entry_name(primary): primary}
    errors: dict[str, str] = {}
    pytorch = None
    for name, formulation, resident in variants:
        label = f"{name}-{formulation or 'auto'}" + ("" if resident is None else f"-resident={resident}")
        try:
            seg = Segmenter(bundle_dir, backend=name, device=device, threads=threads, formulation=formulation,
                            device_pipeline=resident)
        except RelidarError as exc:
            if exc.field != "device_pipeline":  # a backend without that path: not a variant, not an error
                errors[label] = str(exc)
            continue
        key = entry_name(seg)
        if key not in segs:
            on_step(f"loaded {key}")
            segs[key] = seg
        if (name, formulation, resident) == pytorch_variant:
            pytorch = key
    return segs, pytorch, errors


def run_segment_bench(bundle_dir: Path, points: np.ndarray, backend: str = "onnxruntime", device: str = "cpu",
                      repeat: int = 10, spconv: bool = True, sweep_sizes: Sequence[int] = (),
                      sweep_repeat: int = 3, threads: int | None = None, formulation: str | None = None,
                      compare_formulations: bool = False, lanes: int = 1,
                      on_step: Callable[[str], None] | None = None) -> SegmentBenchResult:
    import os

    from relidar.bench.machine import default_threads, machine_info

    step = on_step or (lambda _msg: None)
    threads = int(threads or default_threads())
    seg = Segmenter(bundle_dir, backend=backend, device=device, threads=threads, formulation=formulation)
    want = seg(points).labels  # the warm-up of the Segmenter asked for, before anything else is loaded
    peak_rss_mb = _peak_rss_mb()
    with contextlib.ExitStack() as stack:
        from relidar.core.backends import available_backends

        if spconv or "torch" in available_backends(device):
            from relidar.bench.spconv_reference import torch_threads

            stack.enter_context(torch_threads(threads))
        segs, pytorch, load_errors = _segmenters(bundle_dir, device, threads, seg, compare_formulations, step)
        calls: dict[str, StageCall] = {key: (lambda s=s: s(points).timings_ms) for key, s in segs.items()}
        labels = {key: s(points).labels for key, s in segs.items()}
        reference = None
        if spconv:
            from relidar.bench.spconv_reference import spconv_available, torch_threads

            if spconv_available():
                reference = SpconvReference(bundle_dir, seg.vocabulary.embeddings, seg.bundle.manifest.logit_scale)
                with torch_threads(1):  # its correct output (module docstring)
                    labels[SPCONV] = reference(points)[0]
                calls[SPCONV] = lambda: reference(points)[1]
        step(f"timing {', '.join(calls)} interleaved on {len(points)} points, {threads} thread(s) each")
        runs = time_stages(calls, repeat)
        machine = machine_info(threads)
    spec = seg.bundle.manifest.student
    primary = entry_name(seg)
    stage_ms: dict[str, float] = {}
    for s in STAGES:
        stage_ms.update(percentiles(runs[primary][s], (50, 90), f"{s}_ms"))
    result = SegmentBenchResult(
        points=int(len(points)), voxels=seg.preprocess(points).num_voxels, backend=seg.backend,
        formulation=seg.formulation, profile=spec.profile, voxel_size=spec.voxel_size, repeat=repeat, **stage_ms,
        peak_rss_mb=peak_rss_mb, threads=threads, device_pipeline=seg.device_pipeline, pytorch_entry=pytorch,
        load_average=[round(x, 2) for x in os.getloadavg()], cpu_count=os.cpu_count() or 0, machine=machine,
        load_errors=load_errors)
    for key, run in runs.items():
        result.entries[key] = {**{f"{s}_ms_p50": percentile(run[s], 50) for s in STAGES},
                               "kind": "reference" if key in (SPCONV, pytorch) else "ours",
                               "label_agreement": float((labels[key] == want).mean()) if len(want) else 1.0}
    if pytorch is not None:
        result.network_vs_pytorch = result.network_ms_p50 / result.entries[pytorch]["network_ms_p50"]
    if reference is not None:
        ref = result.entries[SPCONV]
        result.spconv_total_ms_p50 = ref["total_ms_p50"]
        result.spconv_voxelize_ms_p50 = ref["preprocess_ms_p50"]
        result.spconv_network_ms_p50 = ref["network_ms_p50"]
        result.ratio = result.total_ms_p50 / result.spconv_total_ms_p50
        result.network_vs_spconv = result.network_ms_p50 / result.spconv_network_ms_p50
        result.spconv_label_agreement = ref["label_agreement"]
    if compare_formulations:
        for key, other in segs.items():
            if other.backend == seg.backend and other.device_pipeline == seg.device_pipeline:
                result.formulations[other.formulation] = {k: v for k, v in result.entries[key].items() if k != "kind"}
    for n in sweep_sizes:
        step(f"sweep: {n} points")
        scan = resize_scan(points, int(n))
        r = time_segmenter(seg, scan, sweep_repeat)
        result.sweep.append({"points": int(n), "voxels": seg.preprocess(scan).num_voxels,
                             **{f"{s}_ms_p50": percentile(r[s], 50) for s in STAGES}})
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
