"""sensor_msgs/PointCloud2 <-> numpy, written for relidar (``sensor_msgs_py`` is not a dependency).

Works on any object with the PointCloud2 message's attributes (``height``, ``width``, ``fields``,
``is_bigendian``, ``point_step``, ``row_step``, ``data``): rclpy messages and ``rosbags`` messages
both are. The core stays free of rclpy; callers turn a :class:`CloudData` into their own message type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from relidar.core.errors import RelidarError

# sensor_msgs/PointField datatype constants -> numpy scalar types.
DATATYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
DATATYPE_OF: dict[np.dtype, int] = {v: k for k, v in DATATYPES.items()}

# Names real drivers use for return strength (Velodyne/Ouster/Livox/Hesai, KITTI, SemanticKITTI).
INTENSITY_NAMES: tuple[str, ...] = ("intensity", "i", "reflectivity", "reflectance", "remission", "signal")

# No driver packs more than a few hundred bytes per point; a larger point_step is a corrupt header
# (and numpy cannot describe records above 2**31 bytes anyway).
MAX_POINT_STEP = 1 << 20


class PointCloudError(RelidarError, ValueError):
    """A PointCloud2 whose layout or payload cannot be read; the message says which field is wrong."""


class PointFieldLike(Protocol):
    name: str
    offset: int
    datatype: int
    count: int


class PointCloud2Like(Protocol):
    height: int
    width: int
    fields: Sequence[PointFieldLike]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: object  # bytes, array('B') or np.ndarray of uint8


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class CloudData:
    """Everything of a PointCloud2 but its header, ready to copy into any message type."""

    fields: tuple[Field, ...]
    point_step: int
    row_step: int
    width: int
    height: int
    is_bigendian: bool
    is_dense: bool
    data: bytes


def fields_dtype(fields: Sequence[PointFieldLike], point_step: int, is_bigendian: bool) -> np.dtype:
    """A structured numpy dtype of ``point_step`` bytes with one entry per field (padding kept)."""
    if point_step <= 0:
        raise PointCloudError(f"point_step must be positive, got {point_step}")
    if point_step > MAX_POINT_STEP:
        raise PointCloudError(f"point_step {point_step} is larger than {MAX_POINT_STEP} bytes (corrupt header)")
    names, formats, offsets = [], [], []
    order = ">" if is_bigendian else "<"
    for f in fields:
        if f.datatype not in DATATYPES:
            raise PointCloudError(f"field {f.name!r}: unknown PointField datatype {f.datatype}")
        if f.count < 1:
            continue  # a zero-count field occupies nothing
        base = DATATYPES[f.datatype].newbyteorder(order)
        size = base.itemsize * f.count
        if f.offset < 0 or f.offset + size > point_step:
            raise PointCloudError(
                f"field {f.name!r} at offset {f.offset} with {size} bytes runs past point_step {point_step}"
            )
        if f.name in names:
            raise PointCloudError(f"field {f.name!r} appears twice")
        names.append(f.name)
        formats.append(base if f.count == 1 else (base, (f.count,)))
        offsets.append(f.offset)
    spans = sorted(zip(offsets, [np.dtype(fm).itemsize for fm in formats], names))
    for (o1, s1, n1), (o2, _, n2) in zip(spans, spans[1:]):
        if o1 + s1 > o2:
            raise PointCloudError(f"fields {n1!r} and {n2!r} overlap")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _payload(data: object) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)  # type: ignore[arg-type]


def read_cloud(msg: PointCloud2Like) -> np.ndarray:
    """All points of a cloud as a flat structured array (rows of an organised cloud concatenated)."""
    dtype = fields_dtype(msg.fields, msg.point_step, msg.is_bigendian)
    height, width = int(msg.height), int(msg.width)
    if height < 0 or width < 0:
        raise PointCloudError(f"negative size height={height} width={width}")
    row_step = int(msg.row_step)
    if height > 0 and width > 0 and row_step < width * msg.point_step:
        raise PointCloudError(
            f"row_step {row_step} is smaller than width*point_step = {width}*{msg.point_step}"
        )
    buf = _payload(msg.data)
    need = (height - 1) * row_step + width * msg.point_step if height and width else 0
    if buf.size < need:
        raise PointCloudError(f"data has {buf.size} bytes, the layout needs {need} (truncated cloud)")
    if height == 0 or width == 0:
        return np.zeros(0, dtype=dtype)
    if row_step == width * msg.point_step:
        return np.frombuffer(buf[:need].tobytes() if not buf.flags.c_contiguous else buf[:need], dtype=dtype)
    rows = [np.frombuffer(buf[r * row_step : r * row_step + width * msg.point_step], dtype=dtype) for r in range(height)]
    return np.concatenate(rows)


def _find(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lowered = {n.lower(): n for n in names}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    return None


def cloud_to_xyzi(msg: PointCloud2Like, intensity_names: Sequence[str] = INTENSITY_NAMES) -> np.ndarray:
    """[N, 4] float32 x, y, z and intensity (0 when the cloud has none) of every point, in the cloud's order.

    Values are as received, NaN/inf included: the one rule for non-finite points is the Segmenter's
    (``relidar.core.segmenter``), so a scan from a bag or a live cloud is labelled and counted exactly
    as the same points from a file, and a labelled cloud can keep every input point."""
    arr = read_cloud(msg)
    names = arr.dtype.names or ()
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise PointCloudError(f"cloud has no {axis!r} field (fields: {', '.join(names) or 'none'})")
        if arr.dtype[axis].shape != ():
            raise PointCloudError(f"field {axis!r} has count {arr.dtype[axis].shape[0]}, expected 1")
    out = np.empty((arr.size, 4), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf, as sent
        out[:, 0] = arr["x"]
        out[:, 1] = arr["y"]
        out[:, 2] = arr["z"]
        iname = _find(names, intensity_names)
        if iname is not None and arr.dtype[iname].shape == ():
            out[:, 3] = arr[iname]
        else:
            out[:, 3] = 0.0
    return out


def build_cloud(columns: dict[str, np.ndarray], height: int = 1, is_dense: bool = True) -> CloudData:
    """Pack named per-point columns (1-D, any PointField dtype) into a little-endian PointCloud2 layout.

    Fields are laid out in the given order, each aligned to its own size, so ``x, y, z, intensity``
    float32 gives the usual 16-byte point.
    """
    if not columns:
        raise PointCloudError("a cloud needs at least one field")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise PointCloudError(f"columns differ in length: { {k: len(v) for k, v in columns.items()} }")
    n = lengths.pop()
    if height < 1 or n % height:
        raise PointCloudError(f"{n} points cannot form {height} rows")
    fields, offset = [], 0
    for name, col in columns.items():
        dt = np.asarray(col).dtype
        if dt not in DATATYPE_OF:
            raise PointCloudError(f"column {name!r} has dtype {dt}, which PointField cannot express")
        offset = -(-offset // dt.itemsize) * dt.itemsize
        fields.append(Field(name, offset, DATATYPE_OF[dt], 1))
        offset += dt.itemsize
    point_step = -(-offset // 4) * 4
    dtype = fields_dtype(fields, point_step, is_bigendian=False)
    arr = np.zeros(n, dtype=dtype)
    for name, col in columns.items():
        arr[name] = col
    width = n // height
    return CloudData(
        fields=tuple(fields),
        point_step=point_step,
        row_step=point_step * width,
        width=width,
        height=height,
        is_bigendian=False,
        is_dense=is_dense,
        data=arr.tobytes(),
    )


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[N,3] uint8 colours -> float32 'rgb' field as RViz's RGB8 transformer reads it (0x00RRGGBB bits)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.astype(np.uint32).view(np.float32)


def unpack_rgb(field: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`."""
    bits = np.asarray(field, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def labelled_cloud(points: np.ndarray, labels: np.ndarray, scores: np.ndarray, palette: np.ndarray) -> CloudData:
    """The one labelled-cloud layout: the node's output, the labelled bags of ``relidar segment`` and the
    RViz config read it. x, y, z, intensity (float32), label (uint16; ``C``, the number of classes, is
    unknown), score (float32), rgb (packed; the palette's colour, unknown grey). Labels outside
    ``0..C-1`` (the Segmenter's -1 outside its crop) become ``C``."""
    from relidar.core.viz.palette import label_colours

    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    c = len(palette)
    labels = np.asarray(labels)
    out_labels = np.where((labels >= 0) & (labels < c), labels, c).astype(np.uint16)
    pts = np.asarray(points)
    # pack the C+1 colours once and gather the packed values (not N colours packed one by one)
    packed = pack_rgb(label_colours(np.arange(c + 1), palette))
    return build_cloud({
        "x": pts[:, 0].astype(np.float32), "y": pts[:, 1].astype(np.float32), "z": pts[:, 2].astype(np.float32),
        "intensity": pts[:, 3].astype(np.float32), "label": out_labels,
        "score": np.asarray(scores, dtype=np.float32), "rgb": packed[out_labels],
    }, is_dense=bool(np.isfinite(pts[:, :3]).all()))
