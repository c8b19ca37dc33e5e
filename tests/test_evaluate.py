"""Evaluation pieces against independent references, and `relidar evaluate` on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.training.config import DistillConfig
from relidar.training.evaluate import (
    ZeroShotAccumulator,
    label_map,
    linear_cka,
    structural_gap,
    to_vocabulary_labels,
    train_linear_probe,
)
from relidar.training.losses import relational_terms


def test_gap_by_hand_and_matches_loss_term() -> None:
    k = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0], [0.6, 0.8]])
    assert structural_gap(k, q)["gap"] == pytest.approx(0.6)
    rng = np.random.default_rng(0)
    k, q = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    intra = relational_terms(torch.from_numpy(k), torch.from_numpy(q)).intra.item()
    assert structural_gap(k, q)["gap"] == pytest.approx(intra, rel=1e-6)
    assert structural_gap(q, q)["gap"] == pytest.approx(0.0, abs=1e-12)


def test_linear_cka_reference_properties() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 10))
    rot, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rot + 5.0) == pytest.approx(1.0)  # orthogonal, scale and shift invariant
    assert linear_cka(x, rng.standard_normal((200, 10))) < 0.15
    # against the HSIC form with centred Gram matrices (Kornblith et al., eq. 2-3)
    y = x[:, :4] + 0.5 * rng.standard_normal((200, 4))
    h = np.eye(200) - 1.0 / 200
    kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
    hsic = lambda a, b: np.trace(a @ b)  # noqa: E731
    assert linear_cka(x, y) == pytest.approx(hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky)), rel=1e-9)


def test_linear_probe_separates_blobs() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centres = rng.standard_normal((3, 5)) * 4 + 10.0  # offset: standardisation must be folded back correctly
    x = centres[y] + rng.standard_normal((600, 5))
    w, b = train_linear_probe(x[:300], y[:300], 3, steps=200, lr=0.05, seed=0)
    acc = (np.argmax(x[300:] @ w + b, axis=1) == y[300:]).mean()
    assert acc > 0.95


def test_zero_shot_accumulator_and_label_mapping() -> None:
    from relidar.core.text.spec import NamedTextSpec
    from relidar.core.vocabulary import Vocabulary

    voc = Vocabulary(class_names=("road", "car"), synonyms=(("road",), ("car",)),
                     colors=np.zeros((2, 3), np.uint8), embeddings=np.eye(2, dtype=np.float32),
                     templates=("a {}",), encoder=NamedTextSpec(name="test", feature_dim=2))
    lut = label_map(("car", "sky", "road"), voc)
    np.testing.assert_array_equal(lut, [1, -1, 0])
    np.testing.assert_array_equal(to_vocabulary_labels(np.array([0, 1, 2, -1]), lut), [1, -1, 0, -1])
    acc = ZeroShotAccumulator(2)
    target = np.array([0, 0, 1, 1, -1])
    pred = np.array([0, 1, 1, 1, 0])
    inside = np.array([True, True, True, False, True])
    acc.add(pred, target, inside, visible_points=np.array([0, 2]))
    np.testing.assert_array_equal(acc.all_points, [[1, 1], [0, 1]])  # point 3 outside the crop, 4 unlabelled
    np.testing.assert_array_equal(acc.visible, [[1, 0], [0, 1]])


def test_evaluate_cli_writes_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relidar.cli.app import single_command_app
    from relidar.cli.evaluate import evaluate as command
    from relidar.training.distill import distill

    tree = tiny_config_tree(tmp_path / "cache")
    tree["train"]["epochs"] = 1
    tree["eval"]["ood"] = {**tree["data"], "cache": str(tmp_path / "ood"), "val_fraction": 0.5}
    tree["eval"]["ood"]["synthetic"] = {**tree["data"]["synthetic"], "frames": 2,
                                        "world": {**tree["data"]["synthetic"]["world"], "seed": 5}}
    cfg = load_config(write_config(tmp_path / "c.yaml", tree), DistillConfig)
    run = distill(cfg, out=tmp_path / "runs")
    app = single_command_app(command)
    result = CliRunner().invoke(app, ["--checkpoint", str(run.weights), "--out", str(tmp_path / "eval"),
                                      "eval.few_shot.scans=1"])
    assert result.exit_code == 0, result.output
    folder = next((tmp_path / "eval").glob("evaluate_*"))
    report = json.loads((folder / "report.json").read_text())
    assert report["linear_probe"]["k_scans"] == 1
    assert set(report["summary"]) >= {"zero_shot_miou", "zero_shot_miou_visible", "teacher_miou_visible",
                                      "few_shot_miou", "gap", "cka", "finetune_miou", "ood_zero_shot_miou",
                                      "ood_few_shot_miou"}
    assert len(report["zero_shot"]["all"]["confusion"]) == len(report["classes"])
    for png in ("iou_per_class.png", "confusion_zero_shot.png", "bev_0_ground_truth.png", "bev_0_prediction.png"):
        assert (folder / png).stat().st_size > 1000, png
    assert "Per-class IoU" in (folder / "report.md").read_text()
    bad = CliRunner().invoke(app, ["--checkpoint", str(tmp_path / "missing.safetensors")])
    assert bad.exit_code == 1 and str(tmp_path / "missing.safetensors") in bad.output and "Traceback" not in bad.output
