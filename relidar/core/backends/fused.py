"""The ``fused`` backend: the bundle's student on the CPU through compiled sparse convolutions, no ONNX Runtime.

What it runs: the network of the bundle's weights (``student.safetensors``, read with numpy, BatchNorm
folded as export folds it: relidar.core.architecture), walked from the same architecture table the
PyTorch model is built from, each convolution one call of :func:`relidar.core.fused_loops.sparse_conv`
over the pair lists of the feed (the ``pairs`` formulation, relidar.core.graph), then the exported
graph's cosine classifier (relidar.model.deployed.ClassifierHead: the same arithmetic, its two products one
more call of the kernel) and devoxelization. Same inputs and outputs as the stock graph; it labels what the stock graph labels (to
float rounding: tests/core/test_fused_backend.py states the tolerance and the rule for near-ties).

The whole network stage (student, classifier, devoxelization) of the ``fast`` profile (512-d head) on that
scan, 2 threads each, interleaved in one process (``scripts/fused_candidates.py --bundle``, same box, quiet:
load 0.4): fused 45.3 ms, ONNX Runtime 94.7 ms, PyTorch (the torch backend, the same graph) 86.7 ms,
spconv's twin of the same weights 255.9 ms; labels identical to ONNX Runtime's. Under load (2.8) fused 72.4
against ONNX Runtime 137.5 ms (PyTorch's OpenMP threads then wait for a busy core: 2.2 s).

Why a kernel of its own: ONNX Runtime runs the stock pair graph as ~2,700 nodes, and its CPU
``ScatterND`` copies its whole [V, C] input on every call, 26 times per 3x3x3 conv (README "A 10 Hz
lidar on a CPU"); PyTorch's index_add does not copy but still writes every per-offset product to memory
and back. One fused kernel per convolution gathers, multiplies and accumulates in cache.

Candidates, measured per convolution on the real KITTI scan 000000 (47,437 voxels at 0.1 m, its real
pair lists, random weights; one thread's CPU time, min of 15; ``python scripts/fused_candidates.py``) on
the 2-core dev box (``lscpu`` model name "AMD EPYC", AVX-512, 2.6 GHz; numpy's OpenBLAS 0.3.23 on one
thread; 2026-12-07, load ~2.7 from other jobs), in ms:

| conv (level, Cin -> Cout) | MMAC | numba, plain loops | numpy: gather, sgemm, scatter per offset | table + sgemm | fused kernel (this) |
| --- | --- | --- | --- | --- | --- |
| 0, 4 -> 16 | 23 | 5.8 | 11.5 | 14.9 | 1.5 |
| 1, 16 -> 16 | 53 | 11.8 | 8.1 | 18.4 | 1.8 |
| 1, 40 -> 24 | 199 | 30.4 | 14.9 | 42.5 | 5.1 |
| 1, 24 -> 24 | 119 | 18.1 | 11.2 | 27.8 | 3.1 |
| 2, 64 -> 32 | 180 | 24.0 | 9.5 | 31.3 | 4.5 |
| 3, 96 -> 48 | 155 | 14.8 | 5.4 | 16.9 | 3.1 |

* numba with plain loops (output-stationary over the neighbour table, the one measured for issue 14)
  stays scalar: numba disables LLVM's SLP vectoriser and the loop vectoriser leaves 16-64-iteration
  loops alone;
* the BLAS route materialises a gathered copy and a product per offset (what PyTorch and ONNX Runtime
  do), and its small GEMMs run far below the CPU's rate;
* the dense [V, 27*Cin] table with one sgemm multiplies 2.7-3.6x the needed products (most neighbours
  are empty);
* an ONNX Runtime custom op (C++ built into a wheel, or onnxruntime-extensions) was not built: it needs
  a compiler tool chain in every install and the vehicle image, ABI pins to ONNX Runtime's version,
  and would still need the same micro-kernel; numba is already the runtime's compiler
  (relidar.core.voxel_loops) and its code is cached on disk.

Threads: ``threads`` row ranges of each convolution at once (a pool of ``threads - 1`` workers, the
caller runs the first range); None = every CPU this process may use. With one thread per call (the
node's lanes, relidar.core.segmenter.lane_threads) each call runs on its caller's thread alone, so
concurrent calls use one core each (``concurrent`` is true).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from relidar.core.architecture import PROFILES, fold_batchnorm_into
from relidar.core.backends.base import BackendError
from relidar.core.graph import OUTPUTS
from relidar.core.kernel_maps import NUM_HALF_OFFSETS, KernelMaps

if TYPE_CHECKING:
    from relidar.core.bundle import Bundle

NAME = "fused"
BLOCK_ROWS = 1024  # output rows per cache block: measured best at 1024 for 16-48 output channels
KERNEL_VOLUME = {"subm": 27, "down": 8, "up": 8, "point": 1}


@dataclass(frozen=True)
class Conv:
    """One BatchNorm-folded convolution laid out for :func:`relidar.core.fused_loops.sparse_conv`."""

    kind: str            # subm | down | up | point
    level: int           # the level of its pairs (down, up: the finer one)
    weight: np.ndarray   # [K * Cin, Cout] float32
    bias: np.ndarray     # [1, Cout] float32
    tiles: np.ndarray    # fused_loops.column_tiles(Cout)

    @property
    def cout(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def of(cls, kind: str, level: int, weight: np.ndarray, bias: np.ndarray) -> "Conv":
        """From a [K, Cin, Cout] weight and a [Cout] bias, Cout a multiple of 8."""
        from relidar.core import fused_loops

        k, cin, cout = weight.shape
        return cls(kind, level, np.ascontiguousarray(weight.reshape(k * cin, cout), dtype=np.float32),
                   np.ascontiguousarray(bias.reshape(1, cout), dtype=np.float32), fused_loops.column_tiles(cout))


@dataclass(frozen=True)
class Block:
    """relidar.model.network.ResidualBlock: relu(conv2(relu(conv1(x))) + shortcut(x) or x)."""

    conv1: Conv
    conv2: Conv
    shortcut: Conv | None


@dataclass(frozen=True)
class Stage:
    resample: Conv
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Network:
    """relidar.model.network.MinkUNet, folded: the stem's convs, then encoder and decoder stages."""

    stem: tuple[Conv, ...]
    encoder: tuple[Stage, ...]
    decoder: tuple[Stage, ...]

    @property
    def num_levels(self) -> int:
        return len(self.encoder) + 1


def load_network(weights: Path, profile: str) -> Network:
    """The folded network of a student weights file (relidar.model.weights' format) of architecture ``profile``
    (relidar.core.architecture.PROFILES), without PyTorch."""
    from relidar.core.contract import read_safetensors
    from relidar.core.errors import RelidarError

    if profile not in PROFILES:
        raise BackendError(f"profile {profile!r} is not one this relidar knows ({sorted(PROFILES)})", path=weights,
                           field="profile", hint="use backend 'onnxruntime'")
    architecture = PROFILES[profile]
    try:
        _, state = read_safetensors(weights)
    except RelidarError as exc:
        raise BackendError(exc.message, path=weights, hint=exc.hint) from exc

    def conv(prefix: str, kind: str, level: int) -> Conv:
        names = [f"{prefix}.conv.weight"] + [f"{prefix}.norm.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        missing = [n for n in names if n not in state]
        if missing:
            raise BackendError(f"no tensor {missing[0]!r}: these are not the weights of a {profile!r} student",
                               path=weights, hint="re-export the bundle with `relidar export bundle`")
        weight, gamma, beta, mean, var = (state[n].astype(np.float32) for n in names)
        bias = state.get(f"{prefix}.conv.bias")
        weight, bias = fold_batchnorm_into(weight, None if bias is None else bias.astype(np.float32), gamma, beta, mean, var)
        k, cin, cout = weight.shape
        if k != KERNEL_VOLUME[kind] or cout % 8:
            raise BackendError(f"{prefix}.conv.weight has shape {weight.shape}: the fused backend runs kernels of "
                               f"{KERNEL_VOLUME[kind]} offsets and output widths that are multiples of 8", path=weights,
                               hint="use backend 'onnxruntime'")
        return Conv.of(kind, level, weight, bias)

    def block(prefix: str, level: int) -> Block:
        shortcut = conv(f"{prefix}.shortcut", "point", level) if f"{prefix}.shortcut.conv.weight" in state else None
        return Block(conv(f"{prefix}.conv1", "subm", level), conv(f"{prefix}.conv2", "subm", level), shortcut)

    levels = architecture.num_levels
    stem = tuple(conv(f"backbone.stem.{i}", "subm", 0) for i in range(architecture.stem_convs))
    encoder = tuple(Stage(conv(f"backbone.encoder.{s}.resample", "down", s),
                          tuple(block(f"backbone.encoder.{s}.blocks.{b}", s + 1) for b in range(architecture.blocks)))
                    for s in range(len(architecture.encoder)))
    decoder = tuple(Stage(conv(f"backbone.decoder.{s}.resample", "up", levels - 2 - s),
                          tuple(block(f"backbone.decoder.{s}.blocks.{b}", levels - 2 - s)
                                for b in range(architecture.stage_blocks(s))))
                    for s in range(len(architecture.decoder)))
    return Network(stem, encoder, decoder)


@dataclass(frozen=True)
class Pairs:
    """One convolution's pairs as fused_loops.sparse_conv takes them: offset k's output rows (ascending) are
    ``index[o:o+n]`` and its input rows ``index[i:i+n]``, (o, i, n) = offsets[k]."""

    index: np.ndarray    # int64
    offsets: np.ndarray  # [K, 3] int64
    num_out: int         # output rows
    num_in: int          # input rows


def scan_pairs(maps: KernelMaps) -> dict[tuple[str, int], Pairs]:
    """Every convolution's pairs of one scan, keyed by (kind, level), read in place from one buffer per level.

    A level's buffer holds its 13 half-offset pair arrays (relidar.core.kernel_maps: (out, in), both ascending,
    since they are built from sorted keys), then 0..V-1, then its 8 down pair arrays (parent, child; within one
    offset both ascend: a child is 2 * parent + the offset). So offset k < 13 of the submanifold conv is its pair
    array, offset 26 - k the same swapped, the centre and the 1x1 conv the identity; the down conv reads
    (parent, child), the transposed up conv (child, parent)."""
    out: dict[tuple[str, int], Pairs] = {}
    for level in range(maps.num_levels):
        v = maps.num_voxels(level)
        down = maps.down[level] if level < maps.num_levels - 1 else ()
        parts = [*maps.subm[level], np.arange(v, dtype=np.int64)[None, :], *down]
        index = np.concatenate([p.reshape(-1) for p in parts])
        starts = np.cumsum([0] + [p.size for p in parts])
        counts = [p.shape[1] for p in parts]
        half = [(starts[k], starts[k] + counts[k], counts[k]) for k in range(NUM_HALF_OFFSETS)]
        centre = (starts[NUM_HALF_OFFSETS], starts[NUM_HALF_OFFSETS], v)
        subm = half + [centre] + [(i, o, n) for o, i, n in reversed(half)]
        out["subm", level] = Pairs(index, np.array(subm, np.int64), v, v)
        out["point", level] = Pairs(index, np.array([centre], np.int64), v, v)
        if down:
            first = NUM_HALF_OFFSETS + 1
            pairs = [(starts[first + o], starts[first + o] + counts[first + o], counts[first + o]) for o in range(8)]
            coarse = maps.num_voxels(level + 1)
            out["down", level] = Pairs(index, np.array(pairs, np.int64), coarse, v)
            out["up", level] = Pairs(index, np.array([(i, o, n) for o, i, n in pairs], np.int64), v, coarse)
    return out


class Scratch:
    """Float32 work arrays reused from call to call by one calling thread: the k-th request of a call gets the k-th
    buffer, grown (with headroom) when a scan needs more. Fresh arrays of this size come from mmap, and writing
    them first costs a page fault per 4 kB: 7,400 per KITTI scan (~30 MB of activations), a fifth of the network's
    time on one thread on the 2-core box, where ONNX Runtime's arena has none."""

    def __init__(self) -> None:
        self._buffers: list[np.ndarray] = []
        self._next = 0

    def start(self) -> None:
        """A new call: hand the buffers out again from the first."""
        self._next = 0

    def take(self, rows: int, cols: int) -> np.ndarray:
        """An uninitialised C-contiguous [rows, cols] float32 array, valid until the next :meth:`start`."""
        if self._next == len(self._buffers):
            self._buffers.append(np.empty(0, np.float32))
        size = rows * cols
        if self._buffers[self._next].size < size:
            self._buffers[self._next] = np.empty(size + size // 4, np.float32)
        buffer = self._buffers[self._next]
        self._next += 1
        return buffer[:size].reshape(rows, cols)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.scratch = Scratch()


def _identity(num: int) -> Pairs:
    """The pairs of a 1x1 convolution on its own: every row with itself."""
    return Pairs(np.arange(num, dtype=np.int64), np.array([[0, 0, num]], np.int64), num, num)


class FusedBackend:
    """The ``fused`` backend (module docstring)."""

    name = NAME
    formulation = "pairs"
    pipeline = None  # the feed is made on the host (relidar.core.preprocess), as for ONNX Runtime
    concurrent = True  # no state is written during a call but the thread pool's queue

    @classmethod
    def from_bundle(cls, bundle: "Bundle", device: str = "cpu", threads: int | None = None,
                    formulation: str = "pairs") -> "FusedBackend":
        spec = bundle.manifest.student
        if device != "cpu":
            raise BackendError(f"backend {NAME!r} runs on the CPU, not on {device!r}", field="device",
                               hint="use device cpu, or backend 'tensorrt' / 'onnxruntime' / 'torch' on a GPU")
        if formulation != "pairs":
            raise BackendError(f"backend {NAME!r} runs the pair lists, not the {formulation!r} formulation",
                               field="formulation", hint="use formulation auto or pairs, or backend 'onnxruntime' for tables")
        if not spec.weights:
            raise BackendError(f"backend {NAME!r} needs student weights, which this bundle does not ship",
                               path=bundle.root, hint="re-export it with `relidar export bundle` (without --no-weights)")
        weight, bias = bundle.head()
        return cls(load_network(bundle.path(spec.weights), spec.profile), weight, bias, bundle.manifest.logit_scale,
                   threads)

    def __init__(self, network: Network, head_weight: np.ndarray, head_bias: np.ndarray, logit_scale: float,
                 threads: int | None = None) -> None:
        from relidar.core import fused_loops

        self.network = network
        # relidar.model.deployed.ClassifierHead's buffers: y = [x, 1] W', and W' W'^T for |y|^2, with zero rows (and
        # columns) up to a multiple of 8, the width of the homogeneous rows in classify
        augmented = np.concatenate([head_weight, head_bias[None, :]]).astype(np.float32)
        pad = -augmented.shape[0] % 8
        gram = augmented @ augmented.T
        self._augmented = np.pad(augmented, ((0, pad), (0, 0)))
        self._gram = np.pad(gram, ((0, pad), (0, pad)))
        self._logit_scale = np.float32(logit_scale)
        self.threads = int(threads) if threads else len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="relidar-fused") if self.threads > 1 else None
        self._local = _PerThread()  # one Scratch per calling thread: concurrent calls (lanes) share none
        fused_loops.warm_up()

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from relidar.core import fused_loops

        levels = self.network.num_levels
        maps = KernelMaps.from_tensors([feed[n] for n in KernelMaps.tensor_names(levels)], levels)
        features = np.ascontiguousarray(feed["features"], dtype=np.float32)
        cin = self.network.stem[0].weight.shape[0] // KERNEL_VOLUME["subm"]
        if features.shape[1] != cin:
            raise BackendError(f"features have {features.shape[1]} channels, the network takes {cin}", field="features")
        pairs = scan_pairs(maps)
        for (kind, level), p in pairs.items():
            if not fused_loops.pairs_fit(p.index, p.offsets, p.num_out, p.num_in):
                field = f"{'subm' if kind in ('subm', 'point') else 'down'}_{level}_*"
                raise BackendError(f"not the pair lists of the feed's voxels ({kind} pairs out of range or out of order)",
                                   field=field, hint="feed what relidar.core.preprocess builds")
        self._scratch().start()
        x = self.backbone(features, pairs)
        labels, scores = self.classify(x, np.ascontiguousarray(feed["text_embeddings"], dtype=np.float32))
        point_to_voxel = np.ascontiguousarray(feed["point_to_voxel"], dtype=np.int64)
        point_labels = np.empty(len(point_to_voxel), np.int32)
        point_scores = np.empty(len(point_to_voxel), np.float32)
        self._rows(len(point_to_voxel), lambda lo, hi: fused_loops.to_points(point_to_voxel, labels, scores, point_labels,
                                                                             point_scores, lo, hi))
        return dict(zip(OUTPUTS, (point_labels, point_scores, x.copy())))  # x lives in the scratch: the next call reuses it

    def _scratch(self) -> Scratch:
        return self._local.scratch

    def backbone(self, features: np.ndarray, pairs: dict[tuple[str, int], Pairs]) -> np.ndarray:
        """relidar.model.network.MinkUNet.forward over this scan's pairs: [V0, Cb] backbone features."""
        net = self.network
        x = features
        for conv in net.stem:
            x = self._conv(conv, x, pairs, relu=True)
        skips = [x]
        for stage in net.encoder:
            x = self._conv(stage.resample, x, pairs, relu=True)
            x = self._blocks(stage.blocks, x, pairs)
            skips.append(x)
        for s, stage in enumerate(net.decoder):
            skip = skips[len(skips) - 2 - s]
            width = stage.resample.cout
            joined = self._scratch().take(skip.shape[0], width + skip.shape[1])  # torch.cat([up, skip], dim=1)
            self._conv(stage.resample, x, pairs, relu=True, out=joined)
            joined[:, width:] = skip
            x = self._blocks(stage.blocks, joined, pairs)
        return x

    def _blocks(self, blocks: tuple[Block, ...], x: np.ndarray, pairs: dict[tuple[str, int], Pairs]) -> np.ndarray:
        for block in blocks:
            skip = x if block.shortcut is None else self._conv(block.shortcut, x, pairs, relu=False)
            hidden = self._conv(block.conv1, x, pairs, relu=True)
            x = self._conv(block.conv2, hidden, pairs, relu=True, residual=skip)
        return x

    def _conv(self, conv: Conv, x: np.ndarray, pairs: dict[tuple[str, int], Pairs], relu: bool,
              out: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
        """``conv`` of ``x`` into ``out`` (fresh [V, cout], or the first ``cout`` columns of a wider one), row
        ranges on the pool's threads."""
        from relidar.core import fused_loops

        p = pairs[conv.kind, conv.level]
        if out is None:
            out = self._scratch().take(p.num_out, conv.cout)
        res = _NO_RESIDUAL if residual is None else residual
        # the kernel checks no bounds: every shape it relies on, here
        if (x.shape[0] != p.num_in or conv.weight.shape[0] != len(p.offsets) * x.shape[1] or out.shape[0] != p.num_out
                or out.shape[1] < conv.cout or res.shape not in ((0, 0), (p.num_out, conv.cout))):
            raise BackendError(f"a {conv.kind} conv at level {conv.level} got input {x.shape}, weight {conv.weight.shape}, "
                               f"output {out.shape}, residual {res.shape} for {p.num_in} -> {p.num_out} rows")
        bounds = fused_loops.balanced_rows(p.index, p.offsets, p.num_out, self.threads) if self._pool else None
        self._rows(p.num_out, lambda lo, hi: fused_loops.sparse_conv(x, conv.weight, conv.bias, p.index, p.offsets,
                                                                     conv.tiles, out, res, relu, lo, hi, BLOCK_ROWS),
                   bounds)
        return out

    def _rows(self, num: int, job: Callable[[int, int], None], bounds: Sequence[int] | None = None) -> None:
        """``job(lo, hi)`` over rows [0, num) in ``threads`` ranges at once (``bounds``, default equal), the caller
        running the first."""
        if self._pool is None:
            job(0, num)
            return
        if bounds is None:
            bounds = [num * t // self.threads for t in range(self.threads + 1)]
        others = [self._pool.submit(job, int(lo), int(hi)) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        job(int(bounds[0]), int(bounds[1]))
        for other in others:
            other.result()

    def classify(self, x: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """relidar.model.deployed.ClassifierHead: per-voxel (label [V] int64, score [V] float32). Its two products,
        xa G (for |y|^2) and xa W' t^T (the cosines' numerators), are one 1x1 convolution of the kernel above."""
        from relidar.core import fused_loops

        v, classes = x.shape[0], text.shape[0]
        width = self._gram.shape[0]
        xa = self._scratch().take(v, width)
        self._rows(v, lambda lo, hi: fused_loops.classifier_rows(x, xa, lo, hi))
        weight = np.concatenate([self._gram, self._augmented @ text.T], axis=1)
        weight = np.pad(weight, ((0, 0), (0, -weight.shape[1] % 8)))[None]
        head = Conv.of("point", 0, weight, np.zeros(weight.shape[2], np.float32))
        products = self._conv(head, xa, {("point", 0): _identity(v)}, relu=False)
        label = np.empty(v, np.int64)
        score = np.empty(v, np.float32)
        self._rows(v, lambda lo, hi: fused_loops.cosine_softmax(xa, products, classes, self._logit_scale, label, score,
                                                                lo, hi))
        return label, score


_NO_RESIDUAL = np.zeros((0, 0), np.float32)
