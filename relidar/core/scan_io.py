"""Single lidar scans as files: read KITTI ``.bin``, numpy ``.npy``, ``.pcd`` / ``.ply`` (through Open3D,
imported only for those); write labelled, coloured binary ``.ply``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relidar.core.errors import RelidarError


class ScanFormatError(RelidarError, ValueError):
    """A scan file that cannot be read as points; the message names the file and the problem."""


def read_scan(path: str | Path) -> np.ndarray:
    """[N,4] float32 (x, y, z, intensity); intensity is 0 where the file has none."""
    p = Path(path)
    if not p.is_file():
        raise ScanFormatError(f"{p}: scan file not found")
    suffix = p.suffix.lower()
    if suffix == ".bin":
        raw = np.fromfile(p, dtype=np.float32)
        if raw.size % 4:
            raise ScanFormatError(
                f"{p}: {raw.size * 4} bytes is not a whole number of KITTI points (16 bytes: x, y, z, intensity)"
            )
        pts = raw.reshape(-1, 4)
    elif suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise ScanFormatError(f"{p}: not a plain numpy array file ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise ScanFormatError(f"{p}: expected an [N, >=3] array, got shape {arr.shape}")
        pts = np.zeros((arr.shape[0], 4), dtype=np.float32)
        pts[:, : min(4, arr.shape[1])] = arr[:, :4]
    elif suffix in (".pcd", ".ply"):
        pts = _read_open3d(p)
    else:
        raise ScanFormatError(f"{p}: unknown scan format {suffix!r} (supported: .bin, .npy, .pcd, .ply)")
    return np.ascontiguousarray(pts, dtype=np.float32)


def _read_open3d(p: Path) -> np.ndarray:
    """Open3D reads every .pcd/.ply variant; where it cannot be imported (not installed, or a system
    library such as libusb missing) uncompressed files are parsed here with numpy."""
    try:
        import open3d as o3d
    except ImportError as exc:
        return _read_uncompressed(p, f"Open3D is not importable here ({exc})")
    cloud = o3d.t.io.read_point_cloud(str(p))
    if "positions" not in cloud.point or cloud.point["positions"].shape[0] == 0:
        raise ScanFormatError(f"{p}: no points could be read (empty or not a point cloud file)")
    columns = {"x": cloud.point["positions"].numpy()[:, 0], "y": cloud.point["positions"].numpy()[:, 1],
               "z": cloud.point["positions"].numpy()[:, 2]}
    for name in _INTENSITY_NAMES:
        if name in cloud.point:
            columns[name] = cloud.point[name].numpy().reshape(-1)
    return _xyzi(p, columns)


_INTENSITY_NAMES = ("intensity", "intensities", "reflectance", "i")
_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4",
              "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4",
              "uint32": "u4", "float32": "f4", "float64": "f8"}


def _xyzi(p: Path, columns: dict[str, np.ndarray]) -> np.ndarray:
    if not all(k in columns for k in "xyz"):
        raise ScanFormatError(f"{p}: no x, y, z fields (found {sorted(columns)})")
    pts = np.zeros((len(columns["x"]), 4), dtype=np.float32)
    for j, k in enumerate("xyz"):
        pts[:, j] = columns[k]
    for name in _INTENSITY_NAMES:
        if name in columns:
            pts[:, 3] = columns[name]
            break
    return pts


def _read_uncompressed(p: Path, why_not_open3d: str) -> np.ndarray:
    data = p.read_bytes()
    if p.suffix.lower() == ".ply":
        end = data.find(b"end_header\n")
        if not data.startswith(b"ply") or end < 0:
            raise ScanFormatError(f"{p}: not a PLY file (no 'ply' ... 'end_header' header)")
        lines = data[:end].decode("ascii", "replace").splitlines()
        fmt = next((ln.split()[1] for ln in lines if ln.startswith("format")), "")
        fields, count, in_vertex = [], 0, False
        for ln in lines:
            parts = ln.split()
            if parts[:1] == ["element"]:
                in_vertex = parts[1] == "vertex"
                count = int(parts[2]) if in_vertex else count
            elif parts[:1] == ["property"] and in_vertex:
                if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                    raise ScanFormatError(f"{p}: vertex property {ln!r} is not supported without Open3D ({why_not_open3d})")
                fields.append((parts[2], _PLY_TYPES[parts[1]]))
        body = data[end + len(b"end_header\n"):]
        if fmt == "ascii":
            table = np.loadtxt(body.decode().splitlines()[:count], dtype=np.float64, ndmin=2)
            return _xyzi(p, {name: table[:, j] for j, (name, _) in enumerate(fields)})
        order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
        if order is None:
            raise ScanFormatError(f"{p}: unknown PLY format {fmt!r}")
        rows = np.frombuffer(body, dtype=[(n, order + t) for n, t in fields], count=count)
        return _xyzi(p, {n: rows[n] for n, _ in fields})
    end = data.find(b"\nDATA ")
    if end < 0:
        raise ScanFormatError(f"{p}: not a PCD file (no DATA line)")
    line_end = data.index(b"\n", end + 1)
    head = {ln.split()[0]: ln.split()[1:] for ln in data[:line_end].decode("ascii", "replace").splitlines()
            if ln.strip() and not ln.startswith("#")}
    names, sizes, types = head["FIELDS"], [int(s) for s in head["SIZE"]], head["TYPE"]
    counts = [int(c) for c in head.get("COUNT", ["1"] * len(names))]
    n = int(head["POINTS"][0])
    mode = head["DATA"][0]
    body = data[line_end + 1:]
    if mode == "ascii":
        table = np.loadtxt(body.decode().splitlines()[:n], dtype=np.float64, ndmin=2)
        return _xyzi(p, {name: table[:, j] for j, name in enumerate(names)})
    if mode != "binary":
        raise ScanFormatError(f"{p}: PCD DATA {mode} needs Open3D, which is unavailable: {why_not_open3d}")
    kinds = {"F": "f", "I": "i", "U": "u"}
    dtype = [(name, f"<{kinds[t]}{s}", (c,)) if c > 1 else (name, f"<{kinds[t]}{s}")
             for name, s, t, c in zip(names, sizes, types, counts)]
    rows = np.frombuffer(body, dtype=dtype, count=n)
    return _xyzi(p, {name: rows[name] for name in names if rows[name].ndim == 1})


def write_ply(path: str | Path, xyz: np.ndarray, colours: np.ndarray, **fields: np.ndarray) -> Path:
    """Binary little-endian PLY: x, y, z (float32), red, green, blue (uint8) and any extra per-point
    ``fields`` (1-D arrays of int32 / float32 / uint8, e.g. label, score) -- what RViz, Open3D,
    CloudCompare and MeshLab read."""
    from relidar.core.atomic import atomic_write_bytes

    xyz = np.asarray(xyz, dtype=np.float32)
    n = xyz.shape[0]
    ply_types = {np.dtype(np.float32): "float", np.dtype(np.int32): "int", np.dtype(np.uint8): "uchar"}
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    extra = {}
    for name, values in fields.items():
        arr = np.asarray(values).reshape(-1)
        if arr.dtype not in ply_types or arr.shape[0] != n:
            raise ScanFormatError(f"{path}: field {name!r} must be [N]={n} int32/float32/uint8, got {arr.shape} {arr.dtype}")
        extra[name] = arr
        dtype.append((name, arr.dtype.newbyteorder("<").str))
    rows = np.empty(n, dtype=dtype)
    rows["x"], rows["y"], rows["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rgb = np.asarray(colours, dtype=np.uint8)
    rows["red"], rows["green"], rows["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    for name, arr in extra.items():
        rows[name] = arr
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {a}" for a in "xyz"] + [f"property uchar {c}" for c in ("red", "green", "blue")]
    header += [f"property {ply_types[arr.dtype]} {name}" for name, arr in extra.items()]
    header += ["end_header"]
    atomic_write_bytes(path, ("\n".join(header) + "\n").encode() + rows.tobytes())
    return Path(path)
