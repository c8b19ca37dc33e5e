"""The student graph's preprocessing contract, stored inside the ONNX file and checked against the manifest.

What the graph was exported for -- voxel size, crop box, input features, number of levels, backbone
and embedding widths, logit scale -- is written by the exporter into the student ONNX's
``metadata_props`` (key :data:`CONTRACT_KEY`, a JSON object). The bundle's ``manifest.json`` repeats
these values for readers that do not open the ONNX file, but the manifest is not covered by its own
checksums: an edited ``voxel_size`` there was accepted and silently changed every label. Loading a
bundle therefore compares the two (:func:`check_contract`) and refuses a mismatch naming the manifest
field. The metadata is read from the protobuf wire format here (the runtime core has no ``onnx``
package; see :func:`read_onnx_metadata` for why not ONNX Runtime).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Sequence

import numpy as np

from relidar.core.errors import RelidarError

CONTRACT_KEY = "relidar.preprocessing"
CONTRACT_VERSION = 1
# The header key under which a student weights file (relidar.model.weights) stores its StudentConfig (JSON).
WEIGHTS_CONFIG_KEY = "relidar.student_config"


class StudentContract(Protocol):
    """A bundle's ``StudentSpec`` (or anything with the same fields)."""

    @property
    def voxel_size(self) -> float: ...

    @property
    def crop_min(self) -> Sequence[float]: ...

    @property
    def crop_max(self) -> Sequence[float]: ...

    @property
    def input_features(self) -> Sequence[str]: ...

    @property
    def num_levels(self) -> int: ...

    @property
    def backbone_dim(self) -> int: ...

    @property
    def out_dim(self) -> int: ...


def preprocessing_contract(student: StudentContract, logit_scale: float) -> dict[str, Any]:
    """The contract as a JSON-ready dict; its keys are the manifest fields they must equal."""
    return {
        "version": CONTRACT_VERSION,
        "student.voxel_size": float(student.voxel_size),
        "student.crop_min": [float(v) for v in student.crop_min],
        "student.crop_max": [float(v) for v in student.crop_max],
        "student.input_features": [str(f) for f in student.input_features],
        "student.num_levels": int(student.num_levels),
        "student.backbone_dim": int(student.backbone_dim),
        "student.out_dim": int(student.out_dim),
        "logit_scale": float(logit_scale),
    }


def contract_metadata(student: StudentContract, logit_scale: float) -> dict[str, str]:
    """``metadata_props`` entries for the student ONNX (what the exporter writes)."""
    return {CONTRACT_KEY: json.dumps(preprocessing_contract(student, logit_scale), sort_keys=True)}


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX model's ``metadata_props`` (ModelProto field 14: key/value string pairs).

    Read straight from the protobuf wire format, walking the top-level fields and skipping the graph:
    creating an ONNX Runtime session only to read them cost ~2 s for a 3.7 MB student on the 2-core
    box (it resolves the whole graph), this costs milliseconds. ``tests/core/test_bundle_contract.py``
    checks it against the ``onnx`` package's reader.
    """
    import mmap

    p = Path(path)
    try:
        with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _metadata_props(memoryview(data), p)
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise RelidarError(f"cannot be read as an ONNX model ({exc})", path=p, hint="re-export the bundle") from exc


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's ``__metadata__`` (string map): the header is an 8-byte little-endian length and
    that many bytes of JSON, read here with the stdlib so that the core needs no torch or safetensors."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            header, _ = _safetensors_header(fh)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RelidarError(f"cannot be read as a safetensors file ({exc})", path=p, hint="re-export the bundle") from exc
    return _string_map(header.get("__metadata__"))


# safetensors dtype names -> numpy (little-endian, as the format stores them)
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                       "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(``__metadata__``, every tensor as a numpy array) of a safetensors file, numpy only: the header's
    ``dtype``, ``shape`` and ``data_offsets`` (byte range after the header) per tensor."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            header, data_start = _safetensors_header(fh)
            data = fh.read()
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = (int(v) for v in entry["data_offsets"])
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
            shape = tuple(int(d) for d in entry["shape"])
            if not 0 <= begin <= end <= len(data) or end - begin != dtype.itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name!r}: bytes {begin}..{end} do not hold {shape} {entry['dtype']}")
            tensors[name] = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=begin).reshape(shape)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RelidarError(f"cannot be read as a safetensors file ({exc!r})", path=p, hint="re-export the bundle") from exc
    return _string_map(header.get("__metadata__")), tensors


def _safetensors_header(fh: BinaryIO) -> tuple[dict, int]:
    """The JSON header of an open safetensors file and the offset its data starts at."""
    size = int.from_bytes(fh.read(8), "little")
    if size <= 0 or size > 100_000_000:
        raise ValueError(f"header length {size}")
    header = json.loads(fh.read(size))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, 8 + size


def _string_map(meta: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _varint(buf: memoryview, pos: int, path: Path) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise RelidarError("truncated or not an ONNX model (bad varint)", path=path, hint="re-export the bundle")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: memoryview, path: Path):
    """(field number, wire type, value: int for varints, memoryview for length-delimited) of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, path)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, path)
        elif wire == 2:
            size, pos = _varint(buf, pos, path)
            if pos + size > len(buf):
                raise RelidarError("truncated ONNX model", path=path, hint="re-export the bundle")
            value, pos = buf[pos: pos + size], pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise RelidarError(f"not an ONNX model (protobuf wire type {wire})", path=path, hint="re-export the bundle")
        yield number, wire, value


def _metadata_props(buf: memoryview, path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, wire, value in _fields(buf, path):
        if number == 14 and wire == 2:  # ModelProto.metadata_props: StringStringEntryProto {1: key, 2: value}
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value, path) if w == 2}
            out[entry.get(1, "")] = entry.get(2, "")
    return out


def contract_mismatch(stored: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first key whose values differ (floats compared to 1e-9 relative), or None."""
    for key in sorted(set(stored) | set(expected)):
        a, b = stored.get(key), expected.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(a)), abs(float(b))):
                return key
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
                isinstance(x, (int, float)) for x in a + b):
            if any(abs(float(x) - float(y)) > 1e-9 * max(1.0, abs(float(x))) for x, y in zip(a, b)):
                return key
        elif a != b:
            return key
    return None
