"""Fuzz of every file-reading command: truncated files, NaN/inf, wrong headers, empty files, wrong types,
outputs that would clash or land where they cannot, scans outside the crop box.

One pytest case per input (its id says what it is). Each runs the real command in-process (typer's
CliRunner) on a damaged copy of a valid input and asserts: no traceback, exit code 0 or 1, on exit 1
exactly one ``error:`` line naming the damaged file or field, on exit 0 an answer that is right for
the input as it is (the points the output holds are the points the file holds; repaired non-finite
points are reported), and never a ``.partial`` file left behind. Seeded: the same cases every run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from support.bundle_support import shared_bundle

from relidar.cli.app import build_app
from relidar.core.artifact import file_entry
from relidar.core.scan_io import ScanFormatError, read_scan, write_ply

RNG_SEED = 12
ENV = {"COLUMNS": "400", "NO_COLOR": "1"}
SMALL = ["--range", "20", "--resolution", "0.25"]  # small pictures: the fuzz is about inputs, not drawing
SUFFIXES = (".bin", ".npy", ".ply", ".pcd")
KINDS = ("empty", "truncated", "wrong-header", "garbage")
HEADERS = {".bin": b"ply\nformat ascii 1.0\n", ".npy": b"\x89PNG\r\n\x1a\n", ".ply": b"# .PCD v0.7\nFIELDS",
           ".pcd": b"ply\nformat binary_little_endian 1.0\n"}
SEGMENT = ["--backend", "onnxruntime"]


@dataclass(frozen=True)
class Case:
    target: str | Path               # what the one error line must name: the damaged file, folder or field
    args: list
    check_ok: Callable[[str], None] | None = None    # what exit 0 must show; None: exit 0 is wrong
    check_fail: Callable[[str], None] | None = None  # more that exit 1 must show (the error line: errors[0])


@dataclass(frozen=True)
class Workspace:
    base: Path                 # this case's own folder
    bundle: Path               # the session's read-only bundle
    kitti: Path | None         # the real KITTI frame, where ../shared has it
    scans: dict[str, bytes]    # a valid scan in each format, by suffix
    rng: np.random.Generator   # seeded by the case's id


CASES: dict[str, Callable[[Workspace], Case]] = {}


def case(name: str):
    def register(build: Callable[[Workspace], Case]) -> Callable[[Workspace], Case]:
        assert name not in CASES, name
        CASES[name] = build
        return build
    return register


def _mutation(kind: str, data: bytes, rng: np.random.Generator, header: bytes) -> bytes:
    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[: int(rng.integers(1, max(len(data) - 1, 2)))]
    if kind == "wrong-header":
        return header + data[len(header):]
    return rng.integers(0, 256, int(rng.integers(5, 400)), dtype=np.uint8).tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _points(n: int, rng: np.random.Generator) -> np.ndarray:
    xyz = rng.uniform(-20, 20, (n, 3))
    xyz[:, 2] = rng.uniform(-2, 1, n)
    return np.c_[xyz, rng.random(n)].astype(np.float32)


def _damaged(ws: Workspace, kind: str, suffix: str) -> Path:
    path = ws.base / f"{kind}{suffix}"
    path.write_bytes(_mutation(kind, ws.scans[suffix], ws.rng, HEADERS[suffix]))
    return path


def _nan_scan(ws: Workspace) -> Path:
    pts = _points(500, ws.rng)
    pts[ws.rng.choice(500, 25, replace=False), ws.rng.integers(0, 4, 25)] = ws.rng.choice([np.nan, np.inf, -np.inf], 25)
    pts.tofile(ws.base / "nan.bin")
    return ws.base / "nan.bin"


def _bev_ok(ws: Workspace, path: Path) -> Callable[[str], None]:
    def check(out: str) -> None:
        assert f"wrote {ws.base}" in out and read_scan(path).shape[0] > 0  # a file that reads is drawn
    return check


def _nothing_at(path: Path) -> Callable[[str], None]:
    def check(text: str) -> None:
        assert not path.exists(), f"a refused command wrote {path}"
    return check


def _all(*checks: Callable[[str], None]) -> Callable[[str], None]:
    def check(text: str) -> None:
        for c in checks:
            c(text)
    return check


def _contains(*phrases: str) -> Callable[[str], None]:
    def check(text: str) -> None:
        for phrase in phrases:
            assert phrase in text, f"no {phrase!r}"
    return check


def _segment(ws: Workspace, input: Path, *more, out: Path | None = None) -> list:
    return ["segment", input, "--bundle", ws.bundle, "--out", out or ws.base / "out", *SEGMENT, *more]


# --- render bev over every scan format and damage; NaN/inf repaired and drawn; wrong types ----------
for _suffix in SUFFIXES:
    for _kind in KINDS:
        @case(f"render bev {_kind}{_suffix}")
        def _(ws: Workspace, kind: str = _kind, suffix: str = _suffix) -> Case:
            path = _damaged(ws, kind, suffix)
            return Case(path, ["render", "bev", "--scan", path, "--out", ws.base / "bev.png", *SMALL], _bev_ok(ws, path))


@case("render bev nan.bin")
def _(ws: Workspace) -> Case:
    path = _nan_scan(ws)
    return Case(path, ["render", "bev", "--scan", path, "--out", ws.base / "nan.png", *SMALL], _bev_ok(ws, path))


@case("render bev dir.bin")
def _(ws: Workspace) -> Case:
    (ws.base / "dir.bin").mkdir()
    return Case(ws.base / "dir.bin", ["render", "bev", "--scan", ws.base / "dir.bin", "--out", ws.base / "d.png"])


for _name, _labels in (("short.label", lambda: np.zeros(499, "<u4").tobytes()),
                       ("cut.label", lambda: np.zeros(500, "<u4").tobytes()[:-3])):
    @case(f"render bev --labels {_name}")
    def _(ws: Workspace, name: str = _name, labels=_labels) -> Case:
        _points(500, ws.rng).tofile(ws.base / "lab.bin")
        (ws.base / name).write_bytes(labels())
        return Case(ws.base / name, ["render", "bev", "--scan", ws.base / "lab.bin", "--labels", ws.base / name,
                                     "--out", ws.base / "l.png"])


@case("render bev --out under a regular file")
def _(ws: Workspace) -> Case:
    # root writes wherever permissions say no; a parent that is a file is unwritable for everyone
    (ws.base / "a-file").write_text("x")
    np.save(ws.base / "s.npy", _points(100, ws.rng))
    out = ws.base / "a-file" / "bev.png"
    return Case(out, ["render", "bev", "--scan", ws.base / "s.npy", "--out", out, *SMALL])


# --- segment: damaged scans; NaN/inf (exit 0, repaired and reported, every point in the PLY) ----------
def _segment_ok(path: Path, out: Path) -> Callable[[str], None]:
    def check(text: str) -> None:
        n = read_scan(path).shape[0]
        assert read_scan(out / f"{path.stem}.ply").shape[0] == n
        if not np.isfinite(read_scan(path)).all():
            assert "repaired:" in text
    return check


for _kind, _suffix in (("truncated", ".ply"), ("wrong-header", ".pcd"), ("garbage", ".npy")):
    @case(f"segment {_kind}{_suffix}")
    def _(ws: Workspace, kind: str = _kind, suffix: str = _suffix) -> Case:
        path = _damaged(ws, kind, suffix)
        return Case(path, _segment(ws, path, "--write", "ply"))


@case("segment nan.bin")
def _(ws: Workspace) -> Case:
    path = _nan_scan(ws)
    return Case(path, _segment(ws, path, "--write", "ply"), _segment_ok(path, ws.base / "out"))


@case("segment dir.bin")
def _(ws: Workspace) -> Case:
    (ws.base / "dir.bin").mkdir()
    return Case(ws.base / "dir.bin", _segment(ws, ws.base / "dir.bin", "--write", "ply"))


# item 4: outputs are named by the scan's stem, so two scans of one stem are refused, naming both
@case("segment folder a.bin + a.pcd (one output stem)")
def _(ws: Workspace) -> Case:
    data = ws.base / "scans"
    data.mkdir()
    (data / "a.bin").write_bytes(ws.scans[".bin"])
    (data / "a.pcd").write_bytes(ws.scans[".pcd"])
    return Case(data / "a.bin", _segment(ws, data), check_fail=_all(_contains("a.pcd"), _nothing_at(ws.base / "out")))


@case("segment two SemanticKITTI sequences: bag stamps increase")
def _(ws: Workspace) -> Case:
    from relidar.export.labelled import read_labelled_bag

    root = ws.base / "kitti"
    for seq in ("00", "01"):
        (root / "sequences" / seq / "velodyne").mkdir(parents=True)
        for stem in ("000000", "000001"):
            _points(300, ws.rng).tofile(root / "sequences" / seq / "velodyne" / f"{stem}.bin")
    out = ws.base / "out"

    def check(text: str) -> None:
        stamps = [s.stamp_ns for s in read_labelled_bag(out / "bag")[2]]
        assert len(stamps) == 4 and all(a < b for a, b in zip(stamps, stamps[1:])), stamps
    return Case(root, _segment(ws, root, "--write", "bag,label", out=out), check)


# item 5: --out is the folder written; a file's name is refused, not made a folder
for _suffix in (".ply", ".label", ".mcap"):
    @case(f"segment --out labelled{_suffix}")
    def _(ws: Workspace, suffix: str = _suffix) -> Case:
        np.save(ws.base / "s.npy", _points(200, ws.rng))
        out = ws.base / f"labelled{suffix}"
        return Case(out, _segment(ws, ws.base / "s.npy", out=out), check_fail=_all(_contains("--out"), _nothing_at(out)))


# item 6: tracebacks that were reachable
for _device in ("cuda:x", "cuda:", "gpu"):
    @case(f"segment --device {_device}")
    def _(ws: Workspace, device: str = _device) -> Case:
        np.save(ws.base / "s.npy", _points(200, ws.rng))
        return Case(f"'{device}'", _segment(ws, ws.base / "s.npy", "--device", device),
                    check_fail=_all(_contains("device"), _nothing_at(ws.base / "out")))


def _unreadable(path: Path) -> None:
    """A scan file whose read fails with EACCES. chmod 000 does that for a user; root reads through any
    mode, but not a write-only /proc sysctl (the kernel refuses even root), so a link to one is used there."""
    if os.geteuid() != 0:
        path.write_bytes(b"\0" * 32)
        path.chmod(0)
        return
    sysctl = Path("/proc/sys/vm/drop_caches")
    try:
        sysctl.open("rb").close()
    except PermissionError:
        path.symlink_to(sysctl)
        return
    except OSError:
        pass
    pytest.skip("running as root without a write-only /proc sysctl: no file here refuses root a read")


def _folder_with(ws: Workspace, make_bad: Callable[[Path], None], bad_name: str, why: str) -> Case:
    data = ws.base / "scans"
    data.mkdir()
    (data / "good.bin").write_bytes(ws.scans[".bin"])
    make_bad(data / bad_name)
    out = ws.base / "out"
    return Case(data, _segment(ws, data, "--write", "ply", out=out),
                check_fail=_all(_contains(f"{data / bad_name}: {why}", "1 of 2 scan(s) could not be read"),
                                lambda text: read_scan(out / "good.ply")))


@case("segment folder with an unreadable scan (EACCES)")
def _(ws: Workspace) -> Case:
    return _folder_with(ws, _unreadable, "locked.bin", "cannot be read")


@case("segment folder with a dangling symlink scan")
def _(ws: Workspace) -> Case:
    return _folder_with(ws, lambda p: p.symlink_to(ws.base / "gone.bin"), "gone.bin", "is a symbolic link to a missing")


@case("segment folder with a folder named x.bin")
def _(ws: Workspace) -> Case:
    return _folder_with(ws, Path.mkdir, "x.bin", "is a directory")


@case("segment --out under a regular file")
def _(ws: Workspace) -> Case:
    (ws.base / "a-file").write_text("x")
    np.save(ws.base / "s.npy", _points(200, ws.rng))
    out = ws.base / "a-file" / "out"
    return Case(out, _segment(ws, ws.base / "s.npy", out=out))


def _bundle_with_files_entry(ws: Workspace, name_of: Callable[[Path], str]) -> Case:
    """A bundle copy whose manifest lists a file outside its folder, one that exists with the right sha256:
    before the check it was read and accepted."""
    bundle = ws.base / "bundle"
    shutil.copytree(ws.bundle, bundle)
    outside = ws.base / "outside.bin"
    outside.write_bytes(b"not the bundle's")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name_of(outside)] = file_entry(outside).model_dump()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.save(ws.base / "s.npy", _points(200, ws.rng))
    return Case(bundle / "manifest.json", ["segment", ws.base / "s.npy", "--bundle", bundle, "--out", ws.base / "out"],
                check_fail=_all(_contains("files"), _nothing_at(ws.base / "out")))


@case("segment bundle manifest lists ../outside.bin")
def _(ws: Workspace) -> Case:
    return _bundle_with_files_entry(ws, lambda p: f"../{p.name}")


@case("segment bundle manifest lists an absolute path")
def _(ws: Workspace) -> Case:
    return _bundle_with_files_entry(ws, str)


# item 7: points outside the crop box are warned about; a scan with nothing labelled exits 1
@case("segment scan in millimetres (all outside the crop)")
def _(ws: Workspace) -> Case:
    pts = _points(400, ws.rng)
    pts[:, :3] *= 1000
    np.save(ws.base / "mm.npy", pts)
    return Case(ws.base / "mm.npy", _segment(ws, ws.base / "mm.npy", "--write", "ply"),
                check_fail=_contains("(100.0 %) are outside the bundle's crop box (x -51.2..51.2", "nothing labelled"))


@case("segment scan with y up (most outside the crop)")
def _(ws: Workspace) -> Case:
    pts = _points(400, ws.rng)[:, [0, 2, 1, 3]]  # x, z, y: the height axis is the second
    np.save(ws.base / "yup.npy", pts)
    return Case(ws.base / "yup.npy", _segment(ws, ws.base / "yup.npy", "--write", "ply"),
                check_ok=_contains("outside the bundle's crop box"))


@case("segment folder: one scan in millimetres, one in metres")
def _(ws: Workspace) -> Case:
    data = ws.base / "scans"
    data.mkdir()
    pts = _points(400, ws.rng)
    pts.tofile(data / "m.bin")
    pts[:, :3] *= 1000
    pts.tofile(data / "mm.bin")
    out = ws.base / "out"
    return Case(data, _segment(ws, data, "--write", "ply", out=out),
                check_fail=_all(_contains(f"{data / 'mm.bin'}: 400 of 400", "1 of 2 scan(s) had nothing labelled"),
                                lambda text: read_scan(out / "m.ply")))


# --- vocabulary show: damaged JSON and embeddings, a directory, embeddings_file outside its folder ---
def _vocab_copy(ws: Workspace) -> Path:
    folder = ws.base / "vocab"
    folder.mkdir()
    shutil.copy(ws.bundle / "vocabulary.json", folder)
    shutil.copy(ws.bundle / "vocabulary.embeddings.npy", folder)
    return folder / "vocabulary.json"


for _kind in KINDS:
    @case(f"vocabulary show {_kind}")
    def _(ws: Workspace, kind: str = _kind) -> Case:
        path = _vocab_copy(ws)
        path.write_bytes(_mutation(kind, path.read_bytes(), ws.rng, b"[1, 2, 3]"))
        return Case(path, ["vocabulary", "show", path])


@case("vocabulary show truncated embeddings")
def _(ws: Workspace) -> Case:
    path = _vocab_copy(ws)
    npy = path.with_name("vocabulary.embeddings.npy")
    npy.write_bytes(npy.read_bytes()[:40])
    return Case(npy, ["vocabulary", "show", path])


@case("vocabulary show directory")
def _(ws: Workspace) -> Case:
    return Case(ws.base, ["vocabulary", "show", ws.base])


for _label, _name in (("a folder", "sub/vocabulary.embeddings.npy"), ("..", "../vocabulary.embeddings.npy")):
    @case(f"vocabulary show embeddings_file with {_label}")
    def _(ws: Workspace, name: str = _name) -> Case:
        path = _vocab_copy(ws)
        (path.parent / "sub").mkdir()
        shutil.copy(path.with_name("vocabulary.embeddings.npy"), path.parent / "sub")
        shutil.copy(path.with_name("vocabulary.embeddings.npy"), ws.base)
        meta = json.loads(path.read_text())
        meta["embeddings_file"] = name
        path.write_text(json.dumps(meta))
        return Case(path, ["vocabulary", "show", path], check_fail=_contains("embeddings_file"))


@case("vocabulary show embeddings_file is a folder")
def _(ws: Workspace) -> Case:
    path = _vocab_copy(ws)
    (path.parent / "emb.npy").mkdir()
    meta = json.loads(path.read_text())
    meta["embeddings_file"] = "emb.npy"
    path.write_text(json.dumps(meta))
    return Case(path.parent / "emb.npy", ["vocabulary", "show", path], check_fail=_contains("embeddings_file"))


# --- checkpoints: evaluate and export onnx; view; distill configs -----------------------------------
for _kind in KINDS:
    for _command in ("evaluate", "export onnx"):
        @case(f"{_command} {_kind}")
        def _(ws: Workspace, kind: str = _kind, command: str = _command) -> Case:
            path = ws.base / f"{kind}.safetensors"
            path.write_bytes(_mutation(kind, (ws.bundle / "student.safetensors").read_bytes(), ws.rng,
                                       b"\x08\x00\x00\x00\x00\x00\x00\x00{}"))
            out = ["--out", ws.base / "ev"] if command == "evaluate" else ["--out", ws.base / "s.onnx"]
            return Case(path, [*command.split(), "--checkpoint", path, *out])


@case("evaluate 7-byte checkpoint")
def _(ws: Workspace) -> Case:
    (ws.base / "seven.safetensors").write_bytes(b"1234567")
    return Case(ws.base / "seven.safetensors", ["evaluate", "--checkpoint", ws.base / "seven.safetensors"])


for _kind in ("truncated", "wrong-header", "garbage"):
    @case(f"view {_kind}.ply")
    def _(ws: Workspace, kind: str = _kind) -> Case:
        path = _damaged(ws, kind, ".ply")
        return Case(path, ["view", path, "--seconds", "0", "--port", str(_free_port())])


for _name, _text in (("list.yaml", "- 1\n- 2\n"), ("types.yaml", "train:\n  epochs: many\n")):
    @case(f"distill --config {_name}")
    def _(ws: Workspace, name: str = _name, text: str = _text) -> Case:
        (ws.base / name).write_text(text)
        return Case(ws.base / name, ["distill", "--config", ws.base / name])


# --- a KITTI object frame with one damaged file each: overlay and prepare name it; prepare's options --
def _kitti_copy(ws: Workspace) -> Path:
    if ws.kitti is None:
        pytest.skip("the KITTI-folder cases need the real frame (../shared/data)")
    frame = ws.base / "kitti"
    shutil.copytree(ws.kitti, frame)
    return frame


for _name in ("velodyne.bin", "image_2.png", "calib.txt"):
    for _command in ("render overlay", "prepare"):
        @case(f"{_command} bad {_name}")
        def _(ws: Workspace, name: str = _name, command: str = _command) -> Case:
            frame = _kitti_copy(ws)
            png = (frame / "image_2.png").read_bytes()
            damaged = {"velodyne.bin": b"1234567", "image_2.png": png[: len(png) // 3], "calib.txt": b"P2: 1 2 3\n"}
            (frame / name).chmod(0o644)
            (frame / name).write_bytes(damaged[name])
            out = ["--out", ws.base / "ov.png"] if command == "render overlay" else \
                ["--out", ws.base / "cache", "--teacher", "synthetic"]
            return Case(frame / name, [*command.split(), frame, *out])


for _option in ("--superpixels", "--world-size"):
    @case(f"prepare {_option} 0")
    def _(ws: Workspace, option: str = _option) -> Case:
        frame = _kitti_copy(ws)
        cache = ws.base / "cache"
        return Case(option, ["prepare", frame, "--out", cache, "--teacher", "synthetic", option, "0"],
                    check_fail=_nothing_at(cache))


# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_scans(tmp_path_factory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("fuzz_valid")
    pts = _points(600, np.random.default_rng(RNG_SEED))
    pts.tofile(base / "ok.bin")
    np.save(base / "ok.npy", pts)
    write_ply(base / "ok.ply", pts[:, :3], np.zeros((600, 3), np.uint8), intensity=pts[:, 3])
    from pypcd4 import Encoding, PointCloud

    PointCloud.from_xyzi_points(pts).save(base / "ok.pcd", encoding=Encoding.BINARY_COMPRESSED)
    return {s: (base / f"ok{s}").read_bytes() for s in SUFFIXES}


def test_cases_cover_every_command() -> None:
    commands = {name.split(" --")[0].split(" bad ")[0].split()[0] for name in CASES}
    assert len(CASES) >= 70 and {"render", "segment", "vocabulary", "evaluate", "export", "view", "distill",
                                 "prepare"} <= commands


@pytest.mark.parametrize("name", list(CASES))
def test_cli_fuzz(name: str, tmp_path: Path, tmp_path_factory, valid_scans, request) -> None:
    try:
        kitti = request.getfixturevalue("kitti_frame_dir")
    except pytest.skip.Exception:
        kitti = None  # the KITTI-folder cases skip themselves; the rest run anyway
    rng = np.random.default_rng([RNG_SEED, zlib.crc32(name.encode())])
    c = CASES[name](Workspace(tmp_path, shared_bundle(tmp_path_factory), kitti, valid_scans, rng))
    result = CliRunner(env=ENV).invoke(build_app(), [str(a) for a in c.args])
    text = " ".join(result.output.split())
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(f"raised {type(result.exception).__name__}: {result.exception} | {text[-400:]}")
    assert "Traceback" not in result.output, text[-400:]
    assert not list(tmp_path.rglob("*.partial")), "a half-written file was left behind"
    assert result.exit_code in (0, 1), f"exit code {result.exit_code} | {text[-400:]}"
    if result.exit_code == 1:
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, f"exit 1 with {len(errors)} 'error:' lines | {text[-400:]}"
        assert str(c.target) in errors[0], f"the error does not name {c.target}: {errors[0]}"
        if c.check_fail is not None:
            c.check_fail(text)
    else:
        assert c.check_ok is not None, f"exit 0 on a damaged input | {text[-400:]}"
        try:
            c.check_ok(text)
        except ScanFormatError as exc:
            pytest.fail(f"exit 0 but a wrong answer: {exc}")
