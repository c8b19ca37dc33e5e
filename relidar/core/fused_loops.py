"""Compiled (numba) sparse convolution for the CPU: the loops behind relidar.core.backends.fused.

One kernel, :func:`sparse_conv`, serves every convolution of the student (submanifold 3x3x3, the
kernel-2 down and up convolutions, the 1x1 shortcut): given the (out, in) pairs of each kernel offset
sorted by output row, it computes for a range of output rows

    out[r, :cout] = act(bias + residual[r] + sum_k sum_{(r, n) in pairs_k} x[n] @ weight[k])

without materialising any per-offset copy. Output rows go in blocks; per block and offset the pairs
whose output lies in the block (a contiguous range, found by binary search) go through a register
micro-kernel of 4 rows x 16 or 24 columns (:func:`column_tiles`): one [Cin, 16|24] panel of ``weight[k]``
(in L1) feeds 8 or 12 independent FMA chains, and each output row is read and written once per offset,
in cache. Offsets of one block write distinct rows of that block only, so row ranges run on several
threads with no atomics, and each row's sums come out the same whichever thread runs it.

Why explicit vectors (:class:`F32x8`, eight float32 lanes as an LLVM vector type, with load, store,
broadcast and fused multiply-add intrinsics): numba turns off LLVM's SLP vectoriser, and its loop
vectoriser leaves loops of 16-64 iterations (a conv's output width) scalar -- a plain loop nest
measured 2-4 GMAC/s on the 2-core dev box, the same loop over 8-lane vectors with accumulators in
registers 25-46 GMAC/s (scripts/fused_candidates.py; figures in relidar.core.backends.fused). The
vector width is 8 (AVX2); LLVM splits it for narrower machines and fuses multiply-adds only where
the CPU has FMA (the ``contract`` flag), so the code runs on any x86-64 or ARM CPU numba targets.

Compiled code is cached on disk (``cache=True``) like relidar.core.voxel_loops; :func:`warm_up` loads
or compiles it ahead of the first scan. Loops release the GIL (``nogil``): a thread pool runs row
ranges of one conv at once (relidar.core.backends.fused).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8


class F32x8(types.Type):
    """Eight float32 lanes held in one SIMD register (an LLVM ``<8 x float>``)."""

    def __init__(self) -> None:
        super().__init__(name="F32x8")


f32x8 = F32x8()
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VECTOR)


def _lanes_pointer(context, builder, sig, args):
    """Pointer to ``array[row, col]`` (a C-contiguous float32 matrix) as a pointer to 8 lanes; no bounds check:
    the callers stay inside the arrays (widths are multiples of 8, tiles cover them exactly, and the fused
    backend checks the pairs and shapes before it calls)."""
    array_type, row_type, col_type = sig.args[:3]
    array = context.make_array(array_type)(context, builder, args[0])
    row = context.cast(builder, args[1], row_type, types.intp)
    col = context.cast(builder, args[2], col_type, types.intp)
    pointer = cgutils.get_item_pointer(context, builder, array_type, array, [row, col], wraparound=False)
    return builder.bitcast(pointer, _VECTOR.as_pointer())


@intrinsic
def load8(typingctx, array, row, col):
    """``array[row, col:col+8]`` as a vector."""
    def codegen(context, builder, sig, args):
        return builder.load(_lanes_pointer(context, builder, sig, args), align=4)
    return f32x8(array, row, col), codegen


@intrinsic
def store8(typingctx, array, row, col, value):
    """``array[row, col:col+8] = value``."""
    def codegen(context, builder, sig, args):
        builder.store(args[3], _lanes_pointer(context, builder, sig, args), align=4)
        return context.get_dummy_value()
    return types.none(array, row, col, value), codegen


@intrinsic
def splat8(typingctx, scalar):
    """A float32 in every lane."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.float32)
        one = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
    return f32x8(scalar), codegen


@intrinsic
def fma8(typingctx, a, b, c):
    """a * b + c per lane, one fused multiply-add where the CPU has it."""
    def codegen(context, builder, sig, args):
        product = builder.fmul(args[0], args[1], flags=("contract",))
        return builder.fadd(product, args[2], flags=("contract",))
    return f32x8(f32x8, f32x8, f32x8), codegen


@intrinsic
def add8(typingctx, a, b):
    """a + b per lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return f32x8(f32x8, f32x8), codegen


@intrinsic
def sum8(typingctx, a):
    """The sum of the lanes (pairwise: a tree of three vector adds)."""
    def codegen(context, builder, sig, args):
        v = args[0]
        for half in (4, 2, 1):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [(i + half) % LANES for i in range(LANES)])
            v = builder.fadd(v, builder.shuffle_vector(v, v, mask))
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))
    return types.float32(f32x8), codegen


@intrinsic
def relu8(typingctx, a):
    """max(a, 0) per lane (a NaN stays NaN, as in torch.relu)."""
    def codegen(context, builder, sig, args):
        zero = ir.Constant(_VECTOR, [0.0] * LANES)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])
    return f32x8(f32x8), codegen


@njit(cache=True, nogil=True, inline="always")
def _add_into(out, row, col, a, b, c, vectors):
    store8(out, row, col, add8(load8(out, row, col), a))
    if vectors > 1:
        store8(out, row, col + LANES, add8(load8(out, row, col + LANES), b))
    if vectors > 2:
        store8(out, row, col + 2 * LANES, add8(load8(out, row, col + 2 * LANES), c))


@njit(cache=True, nogil=True, inline="always")
def _accumulate4(x, weight, wrow, col, out, n0, n1, n2, n3, o0, o1, o2, o3, vectors):
    """out[o_j, col:col+8v] += x[n_j] @ weight[wrow:wrow+Cin, col:col+8v] for four pairs (n_j, o_j), v = ``vectors``
    (1, 2 or 3: LLVM unswitches the loop on it, so each width runs without the others' branches)."""
    zero = splat8(0.0)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = zero
    for i in range(x.shape[1]):
        x0 = splat8(x[n0, i])
        x1 = splat8(x[n1, i])
        x2 = splat8(x[n2, i])
        x3 = splat8(x[n3, i])
        w = load8(weight, wrow + i, col)
        a0 = fma8(x0, w, a0)
        a1 = fma8(x1, w, a1)
        a2 = fma8(x2, w, a2)
        a3 = fma8(x3, w, a3)
        if vectors > 1:
            w = load8(weight, wrow + i, col + LANES)
            b0 = fma8(x0, w, b0)
            b1 = fma8(x1, w, b1)
            b2 = fma8(x2, w, b2)
            b3 = fma8(x3, w, b3)
        if vectors > 2:
            w = load8(weight, wrow + i, col + 2 * LANES)
            c0 = fma8(x0, w, c0)
            c1 = fma8(x1, w, c1)
            c2 = fma8(x2, w, c2)
            c3 = fma8(x3, w, c3)
    _add_into(out, o0, col, a0, b0, c0, vectors)
    _add_into(out, o1, col, a1, b1, c1, vectors)
    _add_into(out, o2, col, a2, b2, c2, vectors)
    _add_into(out, o3, col, a3, b3, c3, vectors)


@njit(cache=True, nogil=True, inline="always")
def _accumulate1(x, weight, wrow, col, out, n0, o0, vectors):
    """:func:`_accumulate4` for one pair (a range's last 0-3 pairs)."""
    a0 = b0 = c0 = splat8(0.0)
    for i in range(x.shape[1]):
        x0 = splat8(x[n0, i])
        a0 = fma8(x0, load8(weight, wrow + i, col), a0)
        if vectors > 1:
            b0 = fma8(x0, load8(weight, wrow + i, col + LANES), b0)
        if vectors > 2:
            c0 = fma8(x0, load8(weight, wrow + i, col + 2 * LANES), c0)
    _add_into(out, o0, col, a0, b0, c0, vectors)


def column_tiles(width: int) -> np.ndarray:
    """[T, 2] (first column, vectors) tiles covering ``width`` (a multiple of 8) columns: as many 3-vector tiles
    as leave a multiple of 16, the rest 2-vector tiles (fewer broadcasts per multiply-add than 2-vector tiles
    alone, and no padded columns: 24 = 24, 40 = 24 + 16, 48 = 24 + 24, 64 = 4 x 16); 8 is one 1-vector tile."""
    lanes = width // LANES
    threes = lanes // 3
    if (lanes - 3 * threes) % 2:
        threes -= 1  # one 3-vector tile fewer leaves an even number of vectors
    sizes = [3] * threes + [2] * ((lanes - 3 * threes) // 2) if threes >= 0 else [1]
    starts = np.cumsum([0] + sizes[:-1]) * LANES
    return np.array([[start, size] for start, size in zip(starts, sizes)], np.int64).reshape(-1, 2)


@njit(cache=True, nogil=True)
def sparse_conv(x, weight, bias, index, offsets, tiles, out, residual, relu, row0, row1, block):
    """Rows [row0, row1) of one sparse convolution (module docstring), written into ``out[:, :Cout]``.

    x [Vin, Cin] float32; weight [K * Cin, Cout] float32 (offset k's [Cin, Cout] at rows k*Cin..); bias [1, Cout];
    ``tiles`` = column_tiles(Cout), Cout a multiple of 8; offset k's pairs are
    ``index[o:o+n]`` (out, ascending) and ``index[i:i+n]`` (in) for (o, i, n) = offsets[k]; residual
    [Vout, Cout] added before the ReLU, or [0, 0] for none; ``relu``: max(0, .) at the end; ``block``: output
    rows per cache block. ``out`` [Vout, >= Cout] must not share memory with ``x`` or ``residual``.
    """
    cin = x.shape[1]
    cout = weight.shape[1]
    with_residual = residual.shape[0] > 0
    for r0 in range(row0, row1, block):
        r1 = min(r0 + block, row1)
        for r in range(r0, r1):
            for j in range(0, cout, LANES):
                start = load8(bias, 0, j)
                if with_residual:
                    start = add8(start, load8(residual, r, j))
                store8(out, r, j, start)
        for k in range(offsets.shape[0]):
            first_out, first_in, count = offsets[k, 0], offsets[k, 1], offsets[k, 2]
            mine = index[first_out:first_out + count]
            lo = np.searchsorted(mine, r0)
            hi = np.searchsorted(mine, r1)
            to_in = first_in - first_out  # in[p] = index[p + to_in] for out[p] = index[p]
            wrow = k * cin
            for t in range(tiles.shape[0]):
                col, vectors = tiles[t, 0], tiles[t, 1]
                p = first_out + lo
                end = first_out + hi
                while p + 4 <= end:
                    _accumulate4(x, weight, wrow, col, out, index[p + to_in], index[p + 1 + to_in], index[p + 2 + to_in],
                                 index[p + 3 + to_in], index[p], index[p + 1], index[p + 2], index[p + 3], vectors)
                    p += 4
                while p < end:
                    _accumulate1(x, weight, wrow, col, out, index[p + to_in], index[p], vectors)
                    p += 1
        if relu:
            for r in range(r0, r1):
                for j in range(0, cout, LANES):
                    store8(out, r, j, relu8(load8(out, r, j)))


@njit(cache=True, nogil=True)
def pairs_fit(index, offsets, num_out, num_in):
    """Whether every offset's pairs lie inside ``index``, with outputs in [0, num_out) strictly ascending (one
    neighbour per offset and voxel) and inputs in [0, num_in): what :func:`sparse_conv`, which checks no bounds,
    relies on."""
    for k in range(offsets.shape[0]):
        first_out, first_in, count = offsets[k, 0], offsets[k, 1], offsets[k, 2]
        if count < 0 or min(first_out, first_in) < 0 or max(first_out, first_in) + count > index.shape[0]:
            return False
        previous = -1
        for p in range(count):
            out = index[first_out + p]
            source = index[first_in + p]
            if out <= previous or out >= num_out or source < 0 or source >= num_in:
                return False
            previous = out
    return True


@njit(cache=True, nogil=True)
def balanced_rows(index, offsets, num_out, parts):
    """Row bounds [parts + 1] splitting [0, num_out) into ranges of about equal work for :func:`sparse_conv`: pairs
    (their outputs ascend within each offset, so those below a row are a binary search away) plus one per row for
    its initialisation and ReLU. Equal row counts left one thread 60 % of a level-3 conv on the KITTI scan."""
    bounds = np.empty(parts + 1, np.int64)
    bounds[0] = 0
    bounds[parts] = num_out
    total = num_out + offsets[:, 2].sum()
    for part in range(1, parts):
        target = total * part // parts
        lo = bounds[part - 1]
        hi = num_out
        while lo < hi:  # the first row whose work before it reaches the target
            mid = (lo + hi) // 2
            work = mid
            for k in range(offsets.shape[0]):
                work += np.searchsorted(index[offsets[k, 0]:offsets[k, 0] + offsets[k, 2]], mid)
            if work < target:
                lo = mid + 1
            else:
                hi = mid
        bounds[part] = lo
    return bounds


@njit(cache=True, nogil=True)
def classifier_rows(x, xa, row0, row1):
    """relidar.model.deployed.ClassifierHead's homogeneous rows: xa[r] = [x[r], 1] / max(1, max |x[r]|), then zeros
    up to xa's width (a multiple of 8)."""
    cb = x.shape[1]
    for r in range(row0, row1):
        scale = np.float32(1.0)
        for i in range(cb):
            scale = max(scale, abs(x[r, i]))
        for i in range(cb):
            xa[r, i] = x[r, i] / scale
        xa[r, cb] = np.float32(1.0) / scale
        for i in range(cb + 1, xa.shape[1]):
            xa[r, i] = 0.0


@njit(cache=True, nogil=True)
def cosine_softmax(xa, products, classes, logit_scale, labels, scores, row0, row1):
    """Per row: |y|^2 = xa . (xa G), with ``products`` = [xa G | xa W' t^T | padding] (xa's width, then ``classes``
    columns), logits = (xa W' t^T) * logit_scale / |y|; their argmax (the first of equal maxima) into ``labels`` and
    the softmax probability there into ``scores``."""
    width = xa.shape[1]
    for r in range(row0, row1):
        acc = splat8(0.0)
        for j in range(0, width, LANES):
            acc = fma8(load8(products, r, j), load8(xa, r, j), acc)
        factor = logit_scale / np.sqrt(max(sum8(acc), np.float32(1e-12)))
        best = 0
        top = products[r, width] * factor
        for c in range(1, classes):
            value = products[r, width + c] * factor
            if value > top:
                best = c
                top = value
        total = np.float32(0.0)
        for c in range(classes):
            total += np.exp(products[r, width + c] * factor - top)
        labels[r] = best
        scores[r] = np.float32(1.0) / total


@njit(cache=True, nogil=True)
def to_points(point_to_voxel, labels, scores, point_labels, point_scores, row0, row1):
    """Each point's voxel's label and score; -1 and 0 for points outside the crop (voxel -1)."""
    for i in range(row0, row1):
        v = point_to_voxel[i]
        if v >= 0:
            point_labels[i] = labels[v]
            point_scores[i] = scores[v]
        else:
            point_labels[i] = -1
            point_scores[i] = 0.0


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops for the argument types the fused backend passes."""
    x = np.ones((4, 3), np.float32)
    weight = np.zeros((2 * 3, 8), np.float32)
    bias = np.zeros((1, 8), np.float32)
    out = np.zeros((4, 8), np.float32)
    index = np.array([1, 2, 0, 1, 0, 1, 2, 3], np.int64)  # two offsets: (out 1, 2 | in 0, 1), (out 0, 1 | in 2, 3)
    offsets = np.array([[0, 2, 2], [4, 6, 2]], np.int64)
    sparse_conv(x, weight, bias, index, offsets, column_tiles(8), out, np.zeros((0, 0), np.float32), True, 0, 4, 2)
    balanced_rows(index, offsets, 4, 2)
    pairs_fit(index, offsets, 4, 4)
    xa = np.zeros((4, 8), np.float32)
    classifier_rows(x, xa, 0, 4)
    labels, scores = np.zeros(4, np.int64), np.zeros(4, np.float32)
    cosine_softmax(xa, np.zeros((4, 16), np.float32), 2, np.float32(100.0), labels, scores, 0, 4)
    to_points(np.array([0, -1], np.int64), labels, scores, np.zeros(2, np.int32), np.zeros(2, np.float32), 0, 2)
