"""Fuzz of every file-reading command: truncated files, NaN/inf, wrong headers, empty files, wrong types.

Each case runs the real command in-process (typer's CliRunner) on a damaged copy of a valid input and
asserts: no traceback, exit code 0 or 1, on exit 1 a one-line error naming the damaged file, and on
exit 0 an answer that is right for the file as it is (the points the output holds are the points the
file holds; repaired non-finite points are reported). Seeded: the same cases every run.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from bundle_support import shared_bundle

from relidar.cli.app import build_app
from relidar.core.scan_io import ScanFormatError, read_scan, write_ply

RNG_SEED = 12
ENV = {"COLUMNS": "400", "NO_COLOR": "1"}
SMALL = ["--range", "20", "--resolution", "0.25"]  # small pictures: the fuzz is about inputs, not drawing


@dataclass(frozen=True)
class Case:
    name: str
    target: Path                     # the damaged file (or folder) the error must name
    args: list[str]
    check_ok: Callable[[str], None] | None = None  # what exit 0 must show; None: exit 0 is wrong


def _mutations(data: bytes, rng: np.random.Generator, header: bytes) -> dict[str, bytes]:
    cut = int(rng.integers(1, max(len(data) - 1, 2)))
    return {
        "empty": b"",
        "truncated": data[:cut],
        "wrong-header": header + data[len(header):],
        "garbage": rng.integers(0, 256, int(rng.integers(5, 400)), dtype=np.uint8).tobytes(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _points(n: int, rng: np.random.Generator) -> np.ndarray:
    xyz = rng.uniform(-20, 20, (n, 3))
    xyz[:, 2] = rng.uniform(-2, 1, n)
    return np.c_[xyz, rng.random(n)].astype(np.float32)


def _scan_files(base: Path, rng: np.random.Generator) -> dict[str, bytes]:
    pts = _points(600, rng)
    pts.tofile(base / "ok.bin")
    np.save(base / "ok.npy", pts)
    write_ply(base / "ok.ply", pts[:, :3], np.zeros((600, 3), np.uint8), intensity=pts[:, 3])
    from pypcd4 import Encoding, PointCloud

    PointCloud.from_xyzi_points(pts).save(base / "ok.pcd", encoding=Encoding.BINARY_COMPRESSED)
    return {s: (base / f"ok{s}").read_bytes() for s in (".bin", ".npy", ".ply", ".pcd")}


def _cases(base: Path, bundle: Path, kitti: Path | None) -> list[Case]:
    rng = np.random.default_rng(RNG_SEED)
    cases: list[Case] = []
    scans = _scan_files(base, rng)
    headers = {".bin": b"ply\nformat ascii 1.0\n", ".npy": b"\x89PNG\r\n\x1a\n", ".ply": b"# .PCD v0.7\nFIELDS",
               ".pcd": b"ply\nformat binary_little_endian 1.0\n"}

    def bev_ok(path: Path) -> Callable[[str], None]:
        def check(out: str) -> None:
            assert f"wrote {base}" in out and read_scan(path).shape[0] > 0  # a file that reads is drawn
        return check

    # render bev over every scan format and damage
    for suffix, data in scans.items():
        for kind, damaged in _mutations(data, rng, headers[suffix]).items():
            path = base / f"{kind}{suffix}"
            path.write_bytes(damaged)
            cases.append(Case(f"render bev {kind}{suffix}", path,
                              ["render", "bev", "--scan", path, "--out", base / f"{kind}{suffix}.png", *SMALL], bev_ok(path)))
    # NaN/inf: repaired, drawn, counted (segment below)
    pts = _points(500, rng)
    bad = pts.copy()
    bad[rng.choice(500, 25, replace=False), rng.integers(0, 4, 25)] = rng.choice([np.nan, np.inf, -np.inf], 25)
    bad.tofile(base / "nan.bin")
    cases.append(Case("render bev nan.bin", base / "nan.bin",
                      ["render", "bev", "--scan", base / "nan.bin", "--out", base / "nan.png", *SMALL],
                      bev_ok(base / "nan.bin")))
    # wrong types: a directory named like a scan, a PNG as .npy
    (base / "dir.bin").mkdir()
    cases.append(Case("render bev dir.bin", base / "dir.bin", ["render", "bev", "--scan", base / "dir.bin",
                                                                 "--out", base / "d.png"]))
    # labels for a scan: wrong count, truncated
    pts.tofile(base / "lab.bin")
    np.zeros(499, "<u4").tofile(base / "short.label")
    (base / "cut.label").write_bytes(np.zeros(500, "<u4").tobytes()[:-3])
    for name in ("short.label", "cut.label"):
        cases.append(Case(f"render bev --labels {name}", base / name,
                          ["render", "bev", "--scan", base / "lab.bin", "--labels", base / name, "--out", base / "l.png"]))

    # segment: damaged scans, NaN/inf (exit 0, repaired and reported, every point in the PLY)
    def segment_ok(path: Path, out: Path) -> Callable[[str], None]:
        def check(text: str) -> None:
            n = read_scan(path).shape[0]
            assert read_scan(out / f"{path.stem}.ply").shape[0] == n
            if not np.isfinite(read_scan(path)).all():
                assert "repaired:" in text
        return check

    for name in ("truncated.ply", "wrong-header.pcd", "garbage.npy", "nan.bin", "dir.bin"):
        path, out = base / name, base / f"seg_{name}"
        cases.append(Case(f"segment {name}", path, ["segment", path, "--bundle", bundle, "--out", out,
                                                     "--write", "ply", "--backend", "onnxruntime"],
                          segment_ok(path, out) if name == "nan.bin" else None))

    # vocabulary show: damaged JSON and embeddings, a directory
    vocab_json = (bundle / "vocabulary.json").read_bytes()
    for kind, damaged in _mutations(vocab_json, rng, b"[1, 2, 3]").items():
        folder = base / f"vocab_{kind}"
        folder.mkdir()
        (folder / "vocabulary.json").write_bytes(damaged)
        shutil.copy(bundle / "vocabulary.embeddings.npy", folder)
        cases.append(Case(f"vocabulary show {kind}", folder / "vocabulary.json",
                          ["vocabulary", "show", folder / "vocabulary.json"]))
    folder = base / "vocab_npy"
    folder.mkdir()
    (folder / "vocabulary.json").write_bytes(vocab_json)
    (folder / "vocabulary.embeddings.npy").write_bytes((bundle / "vocabulary.embeddings.npy").read_bytes()[:40])
    cases.append(Case("vocabulary show truncated embeddings", folder / "vocabulary.embeddings.npy",
                      ["vocabulary", "show", folder / "vocabulary.json"]))
    cases.append(Case("vocabulary show directory", base, ["vocabulary", "show", base]))

    # checkpoints: evaluate and export onnx
    weights = (bundle / "student.safetensors").read_bytes()
    for kind, damaged in _mutations(weights, rng, b"\x08\x00\x00\x00\x00\x00\x00\x00{}").items():
        path = base / f"{kind}.safetensors"
        path.write_bytes(damaged)
        cases.append(Case(f"evaluate {kind}", path, ["evaluate", "--checkpoint", path, "--out", base / f"ev_{kind}"]))
        cases.append(Case(f"export onnx {kind}", path, ["export", "onnx", "--checkpoint", path,
                                                         "--out", base / f"{kind}.onnx"]))
    (base / "seven.safetensors").write_bytes(b"1234567")
    cases.append(Case("evaluate 7-byte checkpoint", base / "seven.safetensors",
                      ["evaluate", "--checkpoint", base / "seven.safetensors"]))

    # view: damaged labelled PLY
    for kind in ("truncated", "wrong-header", "garbage"):
        path = base / f"{kind}.ply"
        cases.append(Case(f"view {kind}.ply", path, ["view", path, "--seconds", "0", "--port", str(_free_port())]))

    # a distillation config of the wrong shape and type
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "types.yaml").write_text("train:\n  epochs: many\n")
    for name in ("list.yaml", "types.yaml"):
        cases.append(Case(f"distill --config {name}", base / name, ["distill", "--config", base / name]))

    if kitti is not None:  # a KITTI object frame with one damaged file each: overlay and prepare name it
        png = (kitti / "image_2.png").read_bytes()
        damaged_frames = {"velodyne.bin": b"1234567", "image_2.png": png[: len(png) // 3],
                          "calib.txt": b"P2: 1 2 3\n"}
        for name, damaged in damaged_frames.items():
            frame = base / f"kitti_{name.split('.')[0]}"
            shutil.copytree(kitti, frame)
            (frame / name).chmod(0o644)
            (frame / name).write_bytes(damaged)
            cases.append(Case(f"render overlay bad {name}", frame / name,
                              ["render", "overlay", frame, "--out", base / f"ov_{name}.png"]))
            cases.append(Case(f"prepare bad {name}", frame / name,
                              ["prepare", frame, "--out", base / f"cache_{name}", "--teacher", "synthetic"]))
    return cases


def test_cli_fuzz(tmp_path_factory, tmp_path: Path, request) -> None:
    try:
        kitti = request.getfixturevalue("kitti_frame_dir")
    except pytest.skip.Exception:
        kitti = None  # the KITTI-folder cases need the real frame; the rest run anyway
    cases = _cases(tmp_path, shared_bundle(tmp_path_factory), kitti)
    assert len(cases) >= 50
    failures = []
    runner = CliRunner(env=ENV)
    import time

    for case in cases:
        started = time.perf_counter()
        result = runner.invoke(build_app(), [str(a) for a in case.args])
        print(f"{time.perf_counter() - started:6.2f} s  exit {result.exit_code}  {case.name}")
        text = " ".join(result.output.split())
        problem = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problem = f"raised {type(result.exception).__name__}: {result.exception}"
        elif "Traceback" in result.output:
            problem = "printed a traceback"
        elif result.exit_code == 1:
            errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
            if len(errors) != 1:
                problem = f"exit 1 with {len(errors)} 'error:' lines"
            elif str(case.target) not in errors[0]:
                problem = f"the error does not name {case.target}: {errors[0]}"
        elif result.exit_code == 0:
            if case.check_ok is None:
                problem = "exit 0 on a damaged input"
            else:
                try:
                    case.check_ok(text)
                except (AssertionError, ScanFormatError) as exc:
                    problem = f"exit 0 but a wrong answer: {exc}"
        else:
            problem = f"exit code {result.exit_code}"
        if problem:
            failures.append(f"{case.name}: {problem} | {text[-400:]}")
    assert not failures, "\n".join(failures)
