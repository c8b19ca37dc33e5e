"""The layers hold: the runtime core alone, in a fresh virtual environment with only its own requirements,
labels a real scan exactly as the full environment does (with its default backend, fused, and with ONNX
Runtime); and the import contracts fail on an upward import."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

LABEL_SCRIPT = """
import importlib.util, json, sys
import numpy as np
from relidar.core.scan_io import read_scan
from relidar.core.segmenter import Segmenter

seg = Segmenter(sys.argv[1])  # backend "auto": the fused CPU backend (numba), no ONNX Runtime needed
points = read_scan(sys.argv[2])
np.save(sys.argv[3], np.stack([seg(points).labels, Segmenter(sys.argv[1], backend="onnxruntime")(points).labels]))
print(json.dumps({"backend": seg.backend,
                  "torch": importlib.util.find_spec("torch") is not None,
                  "model_layer": importlib.util.find_spec("relidar.model") is not None,
                  "training_layer": importlib.util.find_spec("relidar.training") is not None,
                  "relidar": __import__("relidar").__file__}))
"""


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_runtime_core_alone_labels_the_kitti_scan(tmp_path_factory, tmp_path: Path, kitti_scan_path: Path) -> None:
    """requirements-runtime.txt into a venv without system site packages; only relidar/__init__.py and
    relidar/core/ on its path; the scan labelled there equals the labels of the full environment."""
    pytest.importorskip("torch")  # the full environment writes the test bundle
    from support.bundle_support import shared_bundle

    from relidar.core.scan_io import read_scan
    from relidar.core.segmenter import Segmenter

    bundle = shared_bundle(tmp_path_factory)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    made = _run([sys.executable, "-m", "venv", str(venv)], env, tmp_path, 300)
    assert made.returncode == 0, made.stderr[-3000:]
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements-runtime.txt")],
                     env, tmp_path, 900)
    assert installed.returncode == 0, installed.stderr[-3000:]

    core = tmp_path / "runtime"
    (core / "relidar").mkdir(parents=True)
    shutil.copy(REPO / "relidar" / "__init__.py", core / "relidar" / "__init__.py")
    shutil.copytree(REPO / "relidar" / "core", core / "relidar" / "core", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "labels.npy"
    ran = _run([str(python), "-c", LABEL_SCRIPT, str(bundle), str(kitti_scan_path), str(out)],
               {**env, "PYTHONPATH": str(core)}, tmp_path, 300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    facts = json.loads(ran.stdout.strip().splitlines()[-1])
    assert facts == {"backend": "fused", "torch": False, "model_layer": False, "training_layer": False,
                     "relidar": str(core / "relidar" / "__init__.py")}

    full = Segmenter(bundle, backend="onnxruntime")(read_scan(kitti_scan_path)).labels
    fused, stock = np.load(out)
    assert fused.shape == stock.shape == full.shape == (115384,) and (full >= 0).mean() > 0.9
    np.testing.assert_array_equal(stock, full)
    np.testing.assert_array_equal(fused, full)


LAYERS_CONTRACT = "layers: cli > bench | demo | viewer > training | export > model | synthetic > core"


def _lint_copy(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """lint-imports over a copy of the package (relidar and relidar_ros) under ``tmp_path``: its command and env."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.is_file():
        pytest.skip("import-linter is not installed here (pip install import-linter)")
    ros_src = REPO / "ros2_ws" / "src" / "relidar_ros"
    shutil.copytree(REPO / "relidar", tmp_path / "relidar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ros_src / "relidar_ros", tmp_path / "ros" / "relidar_ros", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    # Wide enough that the report keeps each contract's name and verdict on one line.
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{tmp_path / 'ros'}", "COLUMNS": "200"}
    return [str(lint), "--no-cache", "--config", str(tmp_path / "pyproject.toml")], env


def _failing_lint(args: list[str], env: dict[str, str], module: Path, original: str, target: str) -> str:
    """The report of lint-imports with ``module`` (whose own text is ``original``) importing ``target``; it must fail."""
    module.write_text(original + f"\nimport {target}  # noqa: E402,F401  (deliberately upward)\n")
    broken = _run(args, env, module.parent, 300)
    report = broken.stdout + broken.stderr
    assert broken.returncode != 0, report
    return report


def test_import_contracts_fail_on_an_upward_import(tmp_path: Path) -> None:
    """A copy of the package with one core module importing the training layer breaks the layers contract
    (and the unmodified copy keeps every contract: the failure is the added import's)."""
    args, env = _lint_copy(tmp_path)

    clean = _run(args, env, tmp_path, 300)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]

    module = tmp_path / "relidar" / "core" / "geometry.py"
    report = _failing_lint(args, env, module, module.read_text(), "relidar.training")
    assert f"{LAYERS_CONTRACT} BROKEN" in report
    assert "relidar.core.geometry -> relidar.training" in report


def test_import_contracts_keep_the_synthetic_world_off_torch_and_training(tmp_path: Path) -> None:
    """A synthetic-world module importing the training layer breaks the layers contract and the synthetic
    world's own one; importing torch (allowed to the model layer beside it) breaks its own contract alone."""
    args, env = _lint_copy(tmp_path)
    module = tmp_path / "relidar" / "synthetic" / "texture.py"
    original = module.read_text()

    report = _failing_lint(args, env, module, original, "relidar.training")
    assert f"{LAYERS_CONTRACT} BROKEN" in report
    assert "the synthetic world imports only the core and numpy BROKEN" in report
    assert "relidar.synthetic.texture -> relidar.training" in report

    report = _failing_lint(args, env, module, original, "torch")
    assert f"{LAYERS_CONTRACT} KEPT" in report
    assert "the synthetic world imports only the core and numpy BROKEN" in report
    assert "relidar.synthetic.texture -> torch" in report
