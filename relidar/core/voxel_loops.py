"""Compiled (numba) loops behind :func:`relidar.core.voxelize.voxelize` and
:func:`relidar.core.kernel_maps.build_kernel_maps_numpy`.

Same integers and the same float64 sums, bit for bit, as the numpy formulations they replace (the
references: ``kernel_maps.build_with`` over ``NumpyOps``, which the torch builder shares, and the numpy
voxelize of commit 97bf391 in tests/support/voxelize_reference.py); tests compare them on the KITTI scan and
random clouds. Why the float sums can be identical: points are added to their voxel's sums in input
order -- the order ``np.bincount`` adds them in.

Why compiled: on the 2-core dev box the numpy versions took 20 ms (voxelize) + 18 ms (kernel maps) of
a 138 ms scan (KITTI 000000, 115k points, 47k voxels), mostly in passes over [N]-sized temporaries
(argsorts, searchsorted, bincounts); one loop per job does the same in a few ms. Loops release the GIL
(``nogil``), so a caller can preprocess one scan while ONNX Runtime runs the previous one. Compiled code is
cached on disk (numba's ``cache=True``): the first call of a fresh install compiles for a few seconds,
later processes load it in well under a second; :func:`warm_up` does either ahead of the first scan.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Packed keys below 2**32 (a scan's voxels; batches up to ~60 scans at 0.1 m) sort by two counting
# passes of at most 16 bits each; larger keys fall back to a merge sort, also stable.
_RADIX_LIMIT = 1 << 32


@njit(cache=True, nogil=True)
def _stable_argsort(keys):
    n = keys.shape[0]
    if n == 0:
        return np.empty(0, np.int64)
    hi_key = keys.max()
    if keys.min() < 0 or hi_key >= _RADIX_LIMIT:
        return np.argsort(keys, kind="mergesort")
    bits = 1
    while (hi_key >> bits) > 0:
        bits += 1
    # two least-significant-digit counting passes; digits of at most 16 bits (a 47k-voxel KITTI scan's
    # keys have 27: two 14-bit digits, whose 64 kB histograms stay in cache)
    low_bits = (bits + 1) // 2
    mask = (1 << low_bits) - 1
    count = np.zeros((1 << low_bits) + 1, np.int32)  # the high digit has no more bits than the low one
    first = np.empty(n, np.int64)
    for i in range(n):
        count[(keys[i] & mask) + 1] += 1
    for d in range(mask + 1):
        count[d + 1] += count[d]
    for i in range(n):
        d = keys[i] & mask
        first[count[d]] = i
        count[d] += 1
    if hi_key <= mask:
        return first
    order = np.empty(n, np.int64)
    top = hi_key >> low_bits
    count[:top + 2] = 0
    for i in range(n):
        count[(keys[i] >> low_bits) + 1] += 1
    for d in range(top + 1):
        count[d + 1] += count[d]
    for j in range(n):
        i = first[j]
        d = keys[i] >> low_bits
        order[count[d]] = i
        count[d] += 1
    return order


@njit(cache=True, nogil=True)
def _walk_unique(keys, order):
    """Sorted unique keys and each key's index among them, from a stable sort ``order``."""
    n = keys.shape[0]
    uniq = np.empty(n, np.int64)
    inverse = np.empty(n, np.int64)
    u = -1
    prev = 0
    for j in range(n):
        i = order[j]
        k = keys[i]
        if u < 0 or k != prev:
            u += 1
            uniq[u] = k
            prev = k
        inverse[i] = u
    return uniq[:u + 1].copy(), inverse


@njit(cache=True, nogil=True)
def unique_inverse(keys):
    """``np.unique(keys, return_inverse=True)`` for int64 keys [N]."""
    return _walk_unique(keys, _stable_argsort(keys))


@njit(cache=True, nogil=True)
def voxelize_points(points, crop_min, voxel_size, shape, batch_index):
    """The per-point work of voxelize: (sorted unique keys [V], point->voxel [N] (-1 outside),
    per-voxel float64 sums [V, 4] of x, y, z, intensity (0 where points have no 4th column), counts [V])."""
    n = points.shape[0]
    sx = shape[0] + 2
    sy = shape[1] + 2
    sz = shape[2] + 2
    sel = np.empty(n, np.int64)
    keys = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        # the float64 arithmetic of the numpy formulation: (p - lo) / size, floored; NaN/inf fail the tests
        cx = np.floor((np.float64(points[i, 0]) - crop_min[0]) / voxel_size)
        cy = np.floor((np.float64(points[i, 1]) - crop_min[1]) / voxel_size)
        cz = np.floor((np.float64(points[i, 2]) - crop_min[2]) / voxel_size)
        if cx >= 0 and cy >= 0 and cz >= 0 and cx < shape[0] and cy < shape[1] and cz < shape[2]:
            sel[m] = i
            keys[m] = ((batch_index[i] * sx + (np.int64(cx) + 1)) * sy + (np.int64(cy) + 1)) * sz + (np.int64(cz) + 1)
            m += 1
    uniq, inverse = unique_inverse(keys[:m])
    v = uniq.shape[0]
    sums = np.zeros((v, 4), np.float64)
    counts = np.zeros(v, np.int64)
    point_to_voxel = np.full(n, -1, np.int64)
    width = min(points.shape[1], 4)
    # points in input order, each added to its voxel: the additions of np.bincount, in its order
    for s in range(m):
        i = sel[s]
        u = inverse[s]
        point_to_voxel[i] = u
        counts[u] += 1
        for c in range(width):
            sums[u, c] += np.float64(points[i, c])
    return uniq, point_to_voxel, sums, counts


@njit(cache=True, nogil=True)
def _column_pairs(keys, delta, k, outs, ins, num):
    """Offsets k, k+1, k+2 = (dx, dy, -1..1) of one column, ``delta`` = key(dx, dy, -1) - key(0, 0, 0).

    ``keys`` ends with a sentinel larger than any key. The numpy formulation's searchsorted + "count the
    matches" (kernel_maps._subm_pairs) as a merge walk; the writes are unconditional and the counters
    advance by the match (no data-dependent branches: half the candidates match, a coin toss)."""
    v = keys.shape[0] - 1
    n0 = 0
    n1 = 0
    n2 = 0
    pos = 0
    for o in range(v):
        query = keys[o] + delta
        while keys[pos] < query:
            pos += 1
        p = pos
        outs[k, n0] = o
        ins[k, n0] = p
        m = keys[p] == query
        n0 += m
        p += m
        outs[k + 1, n1] = o
        ins[k + 1, n1] = p
        m = keys[p] == query + 1
        n1 += m
        p += m
        outs[k + 2, n2] = o
        ins[k + 2, n2] = p
        n2 += keys[p] == query + 2
    num[k] = n0
    num[k + 1] = n1
    num[k + 2] = n2


@njit(cache=True, nogil=True)
def subm_pairs(keys, sy, sz):
    """The 13 half-offset (out, in) pair arrays of one level from sorted unique packed keys, in one flat
    buffer: offset k's pairs are ``flat[2*start[k]:2*start[k+1]].reshape(2, -1)`` (see
    ``relidar.core.kernel_maps._subm_pairs`` for the order and the column search this replays)."""
    v = keys.shape[0]
    padded = np.empty(v + 1, np.int64)
    padded[:v] = keys
    padded[v] = np.iinfo(np.int64).max
    outs = np.empty((13, v + 1), np.int64)
    ins = np.empty((13, v + 1), np.int64)
    num = np.zeros(13, np.int64)
    k = 0
    for col in range(4):
        dx = -1 if col < 3 else 0
        dy = col - 1 if col < 3 else -1
        _column_pairs(padded, (dx * sy + dy) * sz - 1, k, outs, ins, num)
        k += 3
    n12 = 0
    for o in range(1, v):  # (0, 0, -1): the previous voxel
        outs[12, n12] = o
        ins[12, n12] = o - 1
        n12 += keys[o - 1] == keys[o] - 1
    num[12] = n12
    start = np.zeros(14, np.int64)
    for j in range(13):
        start[j + 1] = start[j] + num[j]
    flat = np.empty(2 * start[13], np.int64)
    for j in range(13):
        base = 2 * start[j]
        p = num[j]
        flat[base:base + p] = outs[j, :p]
        flat[base + p:base + 2 * p] = ins[j, :p]
    return flat, start


@njit(cache=True, nogil=True)
def pack(coords, shape):
    """``relidar.core.voxelize.pack_keys`` of [V, 4] coords."""
    sx = shape[0] + 2
    sy = shape[1] + 2
    sz = shape[2] + 2
    v = coords.shape[0]
    keys = np.empty(v, np.int64)
    for i in range(v):
        keys[i] = ((coords[i, 0] * sx + (coords[i, 1] + 1)) * sy + (coords[i, 2] + 1)) * sz + (coords[i, 3] + 1)
    return keys


@njit(cache=True, nogil=True)
def unpack(keys, shape):
    """``relidar.core.voxelize.unpack_keys``: [V] keys -> [V, 4] coords."""
    sx = shape[0] + 2
    sy = shape[1] + 2
    sz = shape[2] + 2
    v = keys.shape[0]
    coords = np.empty((v, 4), np.int64)
    for i in range(v):
        k = keys[i]
        coords[i, 3] = k % sz - 1
        k //= sz
        coords[i, 2] = k % sy - 1
        k //= sy
        coords[i, 1] = k % sx - 1
        coords[i, 0] = k // sx
    return coords


@njit(cache=True, nogil=True)
def down_pairs(coords, next_shape):
    """Level l -> l+1: the parent coords [V', 4] and the 8 (parent, child) pair arrays in one flat
    buffer, offset o's at ``flat[2*start[o]:2*start[o+1]].reshape(2, -1)``, children ascending."""
    v = coords.shape[0]
    parent = np.empty((v, 4), np.int64)
    offset = np.empty(v, np.int64)
    num = np.zeros(8, np.int64)
    for i in range(v):
        parent[i, 0] = coords[i, 0]
        parent[i, 1] = coords[i, 1] >> 1
        parent[i, 2] = coords[i, 2] >> 1
        parent[i, 3] = coords[i, 3] >> 1
        o = ((coords[i, 1] & 1) << 2) | ((coords[i, 2] & 1) << 1) | (coords[i, 3] & 1)
        offset[i] = o
        num[o] += 1
    uniq, inverse = unique_inverse(pack(parent, next_shape))
    start = np.zeros(9, np.int64)
    for o in range(8):
        start[o + 1] = start[o] + num[o]
    flat = np.empty(2 * v, np.int64)
    fill = np.zeros(8, np.int64)
    for i in range(v):
        o = offset[i]
        base = 2 * start[o]
        j = fill[o]
        flat[base + j] = inverse[i]
        flat[base + num[o] + j] = i
        fill[o] += 1
    return unpack(uniq, next_shape), flat, start


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops for the argument types scans come in."""
    grid_shape = np.array([4, 4, 2], np.int64)
    lo = np.zeros(3, np.float64)
    for dtype in (np.float32, np.float64):
        pts = np.array([[0.5, 0.5, 0.5, 1.0], [1.5, 0.5, 0.5, 2.0]], dtype=dtype)
        uniq, _, _, _ = voxelize_points(pts, lo, 1.0, grid_shape, np.zeros(2, np.int64))
    coords = unpack(uniq, grid_shape)
    subm_pairs(uniq, 6, 4)
    down_pairs(coords, np.array([2, 2, 1], np.int64))
