"""PointCloud2 <-> numpy in the core (relidar.core.pointcloud2): every layout a driver may publish, and
malformed ones failing with PointCloudError. Messages here are plain objects with the message's
attributes; the reference is a numpy structured array written independently of the reader."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from relidar.core.pointcloud2 import (
    DATATYPES,
    INTENSITY_NAMES,
    Field,
    PointCloudError,
    build_cloud,
    cloud_to_xyzi,
    pack_rgb,
    read_cloud,
    unpack_rgb,
)


@dataclass
class Msg:
    height: int
    width: int
    fields: list = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: object = b""


def msg_from_struct(arr: np.ndarray, height: int = 1, row_pad: int = 0) -> Msg:
    """A message holding ``arr`` (a structured array whose dtype may have gaps and any byte order)."""
    dt = arr.dtype
    bigendian = any(dt.fields[n][0].byteorder == ">" for n in dt.names)
    fields = []
    for name in dt.names:
        sub, offset = dt.fields[name][:2]
        base = sub.base if sub.shape else sub
        code = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in DATATYPES.items()}[base.newbyteorder("=").str[1:]]
        count = int(np.prod(sub.shape)) if sub.shape else 1
        fields.append(Field(name, offset, code, count))
    width = arr.size // height
    rows = arr.reshape(height, width)
    row_bytes = [r.tobytes() + b"\xee" * row_pad for r in rows]
    return Msg(height, width, fields, bigendian, dt.itemsize, dt.itemsize * width + row_pad, b"".join(row_bytes))


def xyzi_dtype(coord: str, order: str = "<", intensity: str | None = "intensity", pad: int = 0) -> np.dtype:
    c = np.dtype(coord).newbyteorder(order)
    names, formats, offsets = ["x", "y", "z"], [c, c, c], [0, c.itemsize, 2 * c.itemsize]
    end = 3 * c.itemsize
    if intensity is not None:
        names.append(intensity)
        formats.append(np.dtype(np.float32).newbyteorder(order))
        offsets.append(end + pad)
        end += pad + 4
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": end + pad + 4})


@pytest.mark.parametrize("code", sorted(DATATYPES))
def test_every_datatype_reads_back(code: int) -> None:
    dt = DATATYPES[code]
    rng = np.random.default_rng(code)
    info = np.finfo(dt) if dt.kind == "f" else np.iinfo(dt)
    values = rng.uniform(max(info.min, -100), min(info.max, 100), size=(7, 3)).astype(dt)
    arr = np.zeros(7, dtype=[("x", dt), ("y", dt), ("z", dt), ("intensity", dt)])
    arr["x"], arr["y"], arr["z"], arr["intensity"] = values[:, 0], values[:, 1], values[:, 2], values[:, 0]
    msg = msg_from_struct(arr)
    assert msg.fields[1].datatype == code
    out = cloud_to_xyzi(msg)
    np.testing.assert_array_equal(out[:, :3], values.astype(np.float32))
    np.testing.assert_array_equal(out[:, 3], values[:, 0].astype(np.float32))
    np.testing.assert_array_equal(read_cloud(msg)["y"], values[:, 1])


@pytest.mark.parametrize("coord", ["f4", "f8"])
def test_big_endian_and_padding(coord: str) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 4)).astype(np.float32)
    arr = np.zeros(50, dtype=xyzi_dtype(coord, ">", pad=6))
    for i, n in enumerate(("x", "y", "z", "intensity")):
        arr[n] = ref[:, i]
    msg = msg_from_struct(arr)
    assert msg.is_bigendian and msg.point_step > 3 * np.dtype(coord).itemsize + 4
    out = cloud_to_xyzi(msg)
    np.testing.assert_allclose(out, ref, rtol=0, atol=0)


def test_organised_cloud_with_row_padding() -> None:
    rng = np.random.default_rng(2)
    arr = np.zeros(4 * 6, dtype=xyzi_dtype("f4"))
    ref = rng.normal(size=(24, 4)).astype(np.float32)
    for i, n in enumerate(("x", "y", "z", "intensity")):
        arr[n] = ref[:, i]
    msg = msg_from_struct(arr, height=4, row_pad=13)
    assert msg.row_step == 6 * msg.point_step + 13
    out = cloud_to_xyzi(msg)
    np.testing.assert_array_equal(out, ref)
    assert out.shape == (24, 4)


@pytest.mark.parametrize("coord", ["f4", "f8"])
def test_nan_inf_points_are_kept_as_sent(coord: str) -> None:
    # The one NaN rule is the Segmenter's (tests/core/test_nan_rule.py): the parser keeps every point, in
    # order, NaN/inf coordinates and intensities as they are (no point dropped, no intensity zeroed).
    arr = np.zeros(6, dtype=xyzi_dtype(coord))
    arr["x"] = [1, np.nan, 3, 4, np.inf, 6]
    arr["y"] = [0, 0, -np.inf, 0, 0, 0]
    arr["intensity"] = [1, 2, 3, np.nan, 5, -np.inf]
    out = cloud_to_xyzi(msg_from_struct(arr))
    assert out.shape == (6, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [1, np.nan, 3, 4, np.inf, 6])
    np.testing.assert_array_equal(out[:, 1], [0, 0, -np.inf, 0, 0, 0])
    np.testing.assert_array_equal(out[:, 3], [1, 2, 3, np.nan, 5, -np.inf])


@pytest.mark.parametrize("name", list(INTENSITY_NAMES) + ["Intensity", "REFLECTIVITY"])
def test_intensity_aliases(name: str) -> None:
    arr = np.zeros(3, dtype=xyzi_dtype("f4", intensity=name))
    arr[name] = [5, 6, 7]
    np.testing.assert_array_equal(cloud_to_xyzi(msg_from_struct(arr))[:, 3], [5, 6, 7])


def test_intensity_absent_is_zero() -> None:
    arr = np.zeros(3, dtype=xyzi_dtype("f8", intensity=None))
    arr["z"] = [1, 2, 3]
    out = cloud_to_xyzi(msg_from_struct(arr))
    np.testing.assert_array_equal(out[:, 3], 0)
    np.testing.assert_array_equal(out[:, 2], [1, 2, 3])


def test_build_cloud_round_trip_with_label_score_rgb() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(9, 3)).astype(np.uint8)
    cols = {
        "x": rng.normal(size=9).astype(np.float32),
        "y": rng.normal(size=9).astype(np.float32),
        "z": rng.normal(size=9).astype(np.float32),
        "intensity": rng.normal(size=9).astype(np.float32),
        "label": rng.integers(0, 9, size=9).astype(np.uint16),
        "score": rng.random(9).astype(np.float32),
        "rgb": pack_rgb(rgb),
    }
    cloud = build_cloud(cols)
    assert cloud.point_step == 28 and cloud.row_step == 28 * 9
    arr = read_cloud(cloud)
    for k, v in cols.items():
        np.testing.assert_array_equal(arr[k].view(v.dtype) if k == "rgb" else arr[k], v)
    np.testing.assert_array_equal(unpack_rgb(arr["rgb"]), rgb)
    assert pack_rgb(np.array([[255, 0, 1]], np.uint8)).view(np.uint32)[0] == 0xFF0001


def _good() -> Msg:
    arr = np.zeros(10, dtype=xyzi_dtype("f4"))
    return msg_from_struct(arr)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: setattr(m, "point_step", 12), "point_step"),
        (lambda m: setattr(m, "point_step", 0), "point_step"),
        (lambda m: setattr(m, "data", m.data[:-1]), "truncated"),
        (lambda m: setattr(m, "fields", m.fields[:2]), "'z'"),
        (lambda m: setattr(m, "fields", []), "'x'"),
        (lambda m: setattr(m, "fields", [Field("x", 0, 9, 1)] + m.fields[1:]), "datatype"),
        (lambda m: setattr(m, "fields", m.fields + [Field("y", 2, 7, 1)]), "twice|overlap"),
        (lambda m: setattr(m, "fields", [m.fields[0], Field("y", 2, 7, 1)] + m.fields[2:]), "overlap"),
        (lambda m: setattr(m, "fields", [Field("x", 0, 7, 3)] + m.fields[3:]), "'y'|count"),
        (lambda m: setattr(m, "fields", [Field("x", -4, 7, 1)] + m.fields[1:]), "offset"),
        (lambda m: setattr(m, "row_step", 4), "row_step"),
        (lambda m: setattr(m, "width", 10**9), "row_step|truncated"),
        (lambda m: setattr(m, "height", -1), "negative"),
        (lambda m: setattr(m, "point_step", 2**40), "point_step|truncated"),
        (lambda m: setattr(m, "fields", [Field("x", 0, 7, 2**31)] + m.fields[1:]), "point_step"),
    ],
)
def test_malformed_layouts_raise(mutate, match: str) -> None:
    msg = _good()
    mutate(msg)
    with pytest.raises(PointCloudError, match=match):
        cloud_to_xyzi(msg)


def test_fuzzed_layouts_raise_only_point_cloud_error() -> None:
    """Random corruptions of a valid cloud either parse or raise PointCloudError, nothing else."""
    rng = np.random.default_rng(4)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        msg = _good()
        for _ in range(rng.integers(1, 4)):
            what = rng.integers(0, 7)
            if what == 0:
                msg.point_step = int(rng.choice([-16, 0, 1, 15, 17, 2**31, 2**63 - 1]))
            elif what == 1:
                msg.width = int(rng.choice([-1, 0, 11, 2**31, 2**62]))
            elif what == 2:
                msg.height = int(rng.choice([-5, 0, 2, 2**33]))
            elif what == 3:
                msg.row_step = int(rng.choice([-1, 0, 1, 2**40]))
            elif what == 4:
                i = int(rng.integers(0, len(msg.fields)))
                f = msg.fields[i]
                msg.fields[i] = Field(f.name, int(rng.choice([f.offset, -1, 13, 2**35])),
                                      int(rng.choice([f.datatype, 0, 9, 255])),
                                      int(rng.choice([f.count, 0, 2, 2**32])))
            elif what == 5:
                msg.data = bytes(msg.data)[: int(rng.integers(0, len(msg.data) + 1))]
            else:
                msg.is_bigendian = not msg.is_bigendian
        try:
            cloud_to_xyzi(msg)
            outcomes["ok"] += 1
        except PointCloudError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100
