"""Single lidar scans as files, read strictly and written in formats other tools open.

Readers (:func:`read_scan`): KITTI ``.bin`` (float32 x, y, z, intensity), numpy ``.npy`` ([N, >=3]),
``.ply`` through plyfile and ``.pcd`` through pypcd4 (ascii, binary and binary_compressed). One
code path per format, each on a well-kept library, and strict: a file is read completely or refused
with a :class:`ScanFormatError` naming the file and the fix -- a truncated body, a size that is not
a whole number of points or a header whose point count disagrees with the data is never repaired by
guessing. (Open3D, which relidar used before, accepted a truncated PLY and invented points, and
filled a missing ``z`` with zeros.) Non-finite coordinates are *not* dropped here: the
:class:`relidar.core.segmenter.Segmenter` drops and counts them, so every consumer sees the same count.

Writers: labelled PLY (x, y, z, intensity, red, green, blue and per-point fields such as label and
score; CloudCompare, MeshLab, Open3D and plyfile read it) and SemanticKITTI ``.label`` files (uint32
per point, semantic id in the lower 16 bits) with the SemanticKITTI raw ids of the class names the
benchmark defines, so its evaluation and visualisation tools read them.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from relidar.core.errors import RelidarError

SCAN_SUFFIXES = (".bin", ".npy", ".pcd", ".ply")
INTENSITY_NAMES = ("intensity", "intensities", "reflectance", "remission", "i")
KITTI_POINT_BYTES = 16  # float32 x, y, z, intensity

# SemanticKITTI's raw label ids (semantic-kitti.yaml) of its 19 evaluation classes; 0 is "unlabeled".
SEMANTIC_KITTI_RAW_IDS: dict[str, int] = {
    "car": 10, "bicycle": 11, "motorcycle": 15, "truck": 18, "other-vehicle": 20, "person": 30,
    "bicyclist": 31, "motorcyclist": 32, "road": 40, "parking": 44, "sidewalk": 48, "other-ground": 49,
    "building": 50, "fence": 51, "vegetation": 70, "trunk": 71, "terrain": 72, "pole": 80,
    "traffic-sign": 81,
}  # fmt: skip
UNLABELED_RAW_ID = 0
# Classes outside SemanticKITTI's list get 1000 + their index (below 2**16, clear of its ids < 260).
CUSTOM_RAW_ID_BASE = 1000


class ScanFormatError(RelidarError, ValueError):
    """A scan or label file that cannot be read or written as points; names the file and the fix."""


def read_scan(path: str | Path) -> np.ndarray:
    """[N,4] float32 (x, y, z, intensity); intensity is 0 where the file has none. N may be 0."""
    p = Path(path)
    if p.is_dir():
        raise ScanFormatError("is a directory, not a scan file", path=p,
                              hint="give one .bin/.npy/.pcd/.ply file; `relidar segment` also takes a folder")
    if not p.is_file():
        if p.is_symlink() and not p.exists():
            raise ScanFormatError("is a symbolic link to a missing file", path=p, hint="fix or remove the link")
        # a FIFO or device would block or stream forever instead of holding one scan
        raise ScanFormatError("is not a regular file" if p.exists() else "scan file not found", path=p)
    readers = {".bin": _read_bin, ".npy": _read_npy, ".ply": _read_ply, ".pcd": _read_pcd}
    suffix = p.suffix.lower()
    if suffix not in readers:
        raise ScanFormatError(f"unknown scan format {suffix!r}", path=p,
                              hint=f"supported: {', '.join(SCAN_SUFFIXES)}")
    try:
        pts = readers[suffix](p)
    except OSError as exc:  # permissions, I/O errors: the file is there but cannot be read
        raise ScanFormatError(f"cannot be read ({exc.strerror or exc})", path=p,
                              hint="check the file's permissions and the disk") from exc
    return np.ascontiguousarray(pts, dtype=np.float32)


def _read_bin(p: Path) -> np.ndarray:
    size = p.stat().st_size
    if size % KITTI_POINT_BYTES:
        raise ScanFormatError(
            f"{size} bytes is not a multiple of {KITTI_POINT_BYTES} (a KITTI .bin holds float32 x, y, z, intensity "
            "per point)", path=p,
            hint="the file is truncated or not a KITTI scan")
    return np.fromfile(p, dtype="<f4").reshape(-1, 4)


def _read_npy(p: Path) -> np.ndarray:
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # EOFError: empty or cut-short file
        raise ScanFormatError(f"not a readable numpy .npy array ({type(exc).__name__}: {exc})", path=p,
                              hint="save points with numpy.save as an [N, >=3] float array") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ScanFormatError(f"holds {getattr(arr, 'dtype', type(arr).__name__)} values, not real numbers", path=p,
                              hint="save points as an [N, >=3] float array")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ScanFormatError(f"expected an [N, >=3] array (x, y, z[, intensity]), got shape {arr.shape}", path=p)
    pts = np.zeros((arr.shape[0], 4), dtype=np.float32)
    pts[:, : min(4, arr.shape[1])] = arr[:, :4]
    return pts


def _columns_to_points(p: Path, columns: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    missing = [k for k in "xyz" if k not in columns]
    if missing:
        raise ScanFormatError(f"{what} has no {', '.join(missing)} field (fields: {', '.join(columns) or 'none'})",
                              path=p, hint="a point cloud needs x, y and z")
    n = len(columns["x"])
    pts = np.zeros((n, 4), dtype=np.float32)
    for j, k in enumerate("xyz"):
        pts[:, j] = columns[k]
    for name in INTENSITY_NAMES:
        if name in columns:
            pts[:, 3] = columns[name]
            break
    return pts


def _read_ply(p: Path) -> np.ndarray:
    import plyfile

    try:
        data = plyfile.PlyData.read(str(p))
    except (plyfile.PlyParseError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ScanFormatError(f"not a readable PLY file ({exc})", path=p,
                              hint="the file is truncated or not a point cloud PLY") from exc
    if "vertex" not in data:
        raise ScanFormatError("PLY has no 'vertex' element", path=p, hint="a point cloud PLY stores points as vertices")
    rows = data["vertex"].data
    names = rows.dtype.names or ()
    scalar = {n: np.asarray(rows[n]) for n in names if rows.dtype[n].kind in "fiu" and rows.dtype[n].shape == ()}
    return _columns_to_points(p, scalar, "PLY vertex element")


def _read_pcd(p: Path) -> np.ndarray:
    from pydantic import ValidationError
    from pypcd4 import PointCloud

    try:
        cloud = PointCloud.from_path(p)
        arr = cloud.pc_data
    except ValidationError as exc:  # pypcd4 validates the header with pydantic
        fields = sorted({str(e["loc"][0]).upper() for e in exc.errors() if e["loc"]})
        raise ScanFormatError(f"not a PCD file: its header lacks or garbles {', '.join(fields)}", path=p,
                              hint="a PCD header has FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS and DATA lines") from exc
    except (ValueError, KeyError, IndexError, EOFError, UnicodeDecodeError, zlib.error, RuntimeError, TypeError) as exc:
        raise ScanFormatError(f"not a readable PCD file ({type(exc).__name__}: {exc})", path=p,
                              hint="the file is truncated or its header does not match its data") from exc
    if len(arr) != cloud.metadata.points:
        raise ScanFormatError(f"header says {cloud.metadata.points} points, the data holds {len(arr)}", path=p,
                              hint="the file is truncated")
    names = arr.dtype.names or ()
    scalar = {n: np.asarray(arr[n]).reshape(-1) for n in names if arr.dtype[n].shape == ()}
    return _columns_to_points(p, scalar, "PCD")


def write_ply(path: str | Path, xyz: np.ndarray, colours: np.ndarray, intensity: np.ndarray | None = None,
              **fields: np.ndarray) -> Path:
    """Binary little-endian PLY, atomically: x, y, z (float32), intensity (float32, when given), red,
    green, blue (uint8) and any extra per-point ``fields`` (1-D int32 / uint16 / float32 / uint8 arrays, e.g.
    label, score)."""
    import plyfile

    from relidar.core.atomic import atomic_write_bytes

    xyz = np.asarray(xyz, dtype=np.float32)
    n = xyz.shape[0]
    columns: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if intensity is not None:
        columns["intensity"] = np.asarray(intensity, dtype=np.float32).reshape(-1)
    rgb = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    columns.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    allowed = {np.dtype(t) for t in (np.float32, np.int32, np.uint16, np.uint8)}
    for name, values in fields.items():
        arr = np.asarray(values).reshape(-1)
        if arr.dtype not in allowed:
            raise ScanFormatError(f"field {name!r} is {arr.dtype}; int32, uint16, float32 or uint8 only", path=path)
        columns[name] = arr
    for name, arr in columns.items():
        if len(arr) != n:
            raise ScanFormatError(f"field {name!r} has {len(arr)} values for {n} points", path=path)
    rows = np.empty(n, dtype=[(k, v.dtype.newbyteorder("<").str) for k, v in columns.items()])
    for name, arr in columns.items():
        rows[name] = arr
    buf = io.BytesIO()
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], byte_order="<").write(buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def semantic_kitti_ids(class_names: Sequence[str]) -> np.ndarray:
    """[C] uint32 raw label ids for a vocabulary's classes: SemanticKITTI's own id where the name is one
    of its classes, else ``CUSTOM_RAW_ID_BASE + index``."""
    return np.array([SEMANTIC_KITTI_RAW_IDS.get(n, CUSTOM_RAW_ID_BASE + k) for k, n in enumerate(class_names)],
                    dtype=np.uint32)


def labels_to_raw_ids(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Class indices (anything outside ``0..C-1`` is unknown) -> [N] uint32 SemanticKITTI raw ids (0 = unlabeled)."""
    labels = np.asarray(labels)
    ids = semantic_kitti_ids(class_names)
    out = np.full(len(labels), UNLABELED_RAW_ID, dtype=np.uint32)
    ok = (labels >= 0) & (labels < len(ids))
    out[ok] = ids[labels[ok]]
    return out


def write_label_file(path: str | Path, raw_ids: np.ndarray) -> Path:
    """A SemanticKITTI ``.label``: one little-endian uint32 per point (instance id 0), atomically."""
    from relidar.core.atomic import atomic_write_bytes

    atomic_write_bytes(path, np.asarray(raw_ids, dtype="<u4").tobytes())
    return Path(path)


def read_label_file(path: str | Path, num_points: int | None = None) -> np.ndarray:
    """[N] uint32 raw ids of a SemanticKITTI ``.label`` (instance bits kept); checks the size and, when
    given, that it holds one label per point of its scan."""
    p = Path(path)
    if not p.is_file():
        raise ScanFormatError("label file not found" if not p.is_dir() else "is a directory, not a .label file", path=p)
    size = p.stat().st_size
    if size % 4:
        raise ScanFormatError(f"{size} bytes is not a multiple of 4 (one uint32 per point)", path=p,
                              hint="the file is truncated or not a SemanticKITTI .label")
    raw = np.fromfile(p, dtype="<u4")
    if num_points is not None and len(raw) != num_points:
        raise ScanFormatError(f"{len(raw)} labels for a scan of {num_points} points", path=p,
                              hint="give the .label file of this scan")
    return raw


def semantic_kitti_label_config(class_names: Sequence[str], colours: np.ndarray) -> dict:
    """The ``labels`` / ``color_map`` (BGR, as semantic-kitti.yaml) of a vocabulary's raw ids, for a
    config file beside written ``.label`` files (semantic-kitti-api's visualiser reads this layout)."""
    ids = semantic_kitti_ids(class_names)
    labels = {UNLABELED_RAW_ID: "unlabeled", **{int(i): str(n) for i, n in zip(ids, class_names)}}
    bgr = {UNLABELED_RAW_ID: [0, 0, 0], **{int(i): [int(c[2]), int(c[1]), int(c[0])] for i, c in zip(ids, colours)}}
    # ``classes``: the vocabulary's names in index order (what PLY/bag ``label`` values index); relidar's own key
    return {"labels": labels, "color_map": bgr, "classes": [str(n) for n in class_names]}
