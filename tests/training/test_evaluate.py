"""Evaluation pieces against independent references, and `relidar evaluate` on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.training.config import DistillConfig
from relidar.training.evaluate import (
    ZeroShotAccumulator,
    balanced_pick,
    fraction_tag,
    knn_label_agreement,
    label_map,
    linear_cka,
    spread,
    structural_gap,
    to_vocabulary_labels,
    train_linear_probe,
)
from relidar.training.evaluate import results as typed
from relidar.training.losses import relational_terms
from relidar.training.metrics import miou_over, scores_from_confusion


def test_gap_by_hand_and_matches_loss_term() -> None:
    k = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0], [0.6, 0.8]])
    assert structural_gap(k, q).gap == pytest.approx(0.6)
    rng = np.random.default_rng(0)
    k, q = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    intra = relational_terms(torch.from_numpy(k), torch.from_numpy(q)).intra.item()
    assert structural_gap(k, q).gap == pytest.approx(intra, rel=1e-6)
    assert structural_gap(q, q).gap == pytest.approx(0.0, abs=1e-12)



def test_measures_leave_their_inputs_alone() -> None:
    # the rows are normalised in place (relidar.core.rows.unit_rows), so the measures must work on copies
    rng = np.random.default_rng(1)
    k, q, y = 3.0 * rng.standard_normal((30, 4)), rng.standard_normal((30, 4)), rng.integers(0, 2, 30)
    k0, q0 = k.copy(), q.copy()
    structural_gap(k, q)
    knn_label_agreement(k, y, 3)
    np.testing.assert_array_equal(k, k0)
    np.testing.assert_array_equal(q, q0)

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


def shares_of(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Brute force: every row's cosine to every other, the k largest, the share with its label."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    shares = []
    for i in range(len(x)):
        sims = [(float(xn[i] @ xn[j]), j) for j in range(len(x)) if j != i]
        nn = [j for _, j in sorted(sims, reverse=True)[:k]]
        shares.append(np.mean(y[nn] == y[i]))
    return np.array(shares)


def test_knn_label_agreement_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 10)
    x = rng.standard_normal((40, 6)) + 1.5 * np.eye(6)[y]
    k = 5
    shares = shares_of(x, y, k)
    expected = np.mean([shares[y == 0].mean(), shares[y == 1].mean()])
    assert knn_label_agreement(x, y, k) == pytest.approx(expected)
    # perfectly separated classes agree fully; features independent of the labels sit near chance (class-balanced)
    assert knn_label_agreement(np.eye(2)[y] + 1e-3 * rng.standard_normal((40, 2)), y, k) == pytest.approx(1.0)
    noise = rng.standard_normal((2000, 8))
    labels = rng.integers(0, 2, 2000)
    assert abs(knn_label_agreement(noise, labels, 10) - 0.5) < 0.05
    assert np.isnan(knn_label_agreement(x[:3], y[:3], 5))
    # a class with no more than k rows is left out: only class 0 counts here
    assert knn_label_agreement(x[:35], y[:35], 5) == pytest.approx(shares_of(x[:35], y[:35], 5)[y[:35] == 0].mean())


def test_balanced_pick_and_seen_mious() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 100 + [1] * 7 + [-1] * 50 + [2] * 30)
    pick = balanced_pick(labels, 20, rng)
    assert np.bincount(labels[pick]).tolist() == [20, 7, 20] and len(set(pick.tolist())) == len(pick)
    # confusion rows = truth: class 0 perfect, class 1 all predicted 0, class 2 absent from the truth
    cm = np.array([[10, 0, 0], [5, 0, 0], [0, 0, 0]])
    scores = scores_from_confusion(cm)
    assert scores.miou == pytest.approx((10 / 15 + 0.0) / 2)
    assert miou_over(scores, np.array([True, False, True])) == pytest.approx(10 / 15)
    assert np.isnan(miou_over(scores, np.array([False, False, True])))
    assert fraction_tag(0.01) == "1pct" and fraction_tag(0.1) == "10pct" and fraction_tag(0.005) == "0.5pct"
    assert spread(tuple(range(100)), 3) == [0, 50, 99] and spread((4, 5), 0) == [4]


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
    # out of distribution: another world and another sensor (24 beams), its own training and held-out streets
    ood = tiny_config_tree(tmp_path / "ood", frames=2, seed=5)["data"]
    for source in (ood, ood["val"]):
        source["synthetic"]["world"]["lidar"]["beams"] = 24
    tree["eval"]["ood"] = ood
    cfg = load_config(write_config(tmp_path / "c.yaml", tree), DistillConfig)
    run = distill(cfg, out=tmp_path / "runs")
    app = single_command_app(command)
    result = CliRunner().invoke(app, ["--checkpoint", str(run.weights), "--out", str(tmp_path / "eval"),
                                      "eval.few_shot.probe_max_scans=1"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "eval"  # --out is exactly the report folder
    report = json.loads((folder / "report.json").read_text())
    assert report["linear_probe"]["scans"] == 1
    keys = {"zero_shot_miou", "zero_shot_miou_seen", "zero_shot_miou_visible", "zero_shot_miou_visible_seen",
            "teacher_miou_visible", "probe_miou", "probe_miou_seen", "gap", "gap_balanced", "cka", "knn_agreement",
            "teacher_knn_agreement", "finetune_miou_50pct"}
    assert set(report["summary"]) >= keys | {f"ood_{k}" for k in keys}
    assert report["finetune"][0]["scans"] == 2 and report["ood"]["finetune"][0]["scans"] == 1
    assert len(report["zero_shot"]["all"]["confusion"]) == len(report["classes"])
    for png in ("iou_per_class.png", "confusion_zero_shot.png", "bev_0_ground_truth.png", "bev_0_prediction.png"):
        assert (folder / png).stat().st_size > 1000, png
    assert "Per-class IoU" in (folder / "report.md").read_text()
    bad = CliRunner().invoke(app, ["--checkpoint", str(tmp_path / "missing.safetensors")])
    assert bad.exit_code == 1 and str(tmp_path / "missing.safetensors") in bad.output and "Traceback" not in bad.output


def _hand_made_result():
    """An EvaluationResult built by hand (no model): every number known in advance."""
    from relidar.core.text.spec import NamedTextSpec
    from relidar.core.vocabulary import Vocabulary

    names = ("road", "car", "tree")
    voc = Vocabulary(class_names=names, synonyms=tuple((n,) for n in names), colors=np.zeros((3, 3), np.uint8),
                     embeddings=np.eye(3, dtype=np.float32), templates=("a {}",),
                     encoder=NamedTextSpec(name="test", feature_dim=3))
    # rows = truth: road IoU 8/11, car 3/6, tree 5/5
    scores = scores_from_confusion(np.array([[8, 2, 0], [1, 3, 0], [0, 0, 5]]))
    perfect = scores_from_confusion(np.diag([4, 4, 0]))  # tree absent: mIoU over road and car

    def one_set(offset: float) -> typed.SetResult:
        kept = (typed.KeptScan("f0", np.zeros((2, 4), np.float32), np.zeros(2, np.int64), np.zeros(2, np.int64),
                               np.ones(2, bool)),)
        structure = typed.StructureResult(gap=0.1 + offset, gap_balanced=0.2, cka=0.3, knn_agreement=0.4,
                                          teacher_knn_agreement=0.5)
        zs = typed.ZeroShotResult(all_points=scores, visible=perfect, teacher=scores,
                                  seen=np.array([True, False, True]), inside_fraction=0.75, scans=2,
                                  structure=structure, kept=kept)
        probe = typed.ProbeResult(scores=perfect, scans=1, train_points=100)
        finetune = (typed.FinetuneResult(scores=perfect, scans=1, fraction=0.01, steps=5),
                    typed.FinetuneResult(scores=scores, scans=2, fraction=0.1, steps=5))
        return typed.SetResult(zero_shot=zs, linear_probe=probe, finetune=finetune)

    return typed.EvaluationResult(vocabulary=voc, in_distribution=one_set(0.0), ood=one_set(0.5))


# report.json's keys as they were when evaluation returned dicts (compare, the demo and the docs read them)
SUMMARY_KEYS = ["zero_shot_miou", "zero_shot_miou_seen", "zero_shot_miou_visible", "zero_shot_miou_visible_seen",
                "teacher_miou_visible", "teacher_seen_classes", "probe_miou", "probe_miou_seen", "gap", "gap_balanced",
                "cka", "knn_agreement", "teacher_knn_agreement", "finetune_miou_1pct", "finetune_miou_10pct"]
SCORE_KEYS = ["miou", "accuracy", "iou", "confusion"]
SET_KEYS = ["zero_shot", "structure", "linear_probe", "finetune"]


def test_result_json_keeps_its_keys_and_values() -> None:
    result = _hand_made_result()
    payload = json.loads(json.dumps(result.to_json(), allow_nan=True))
    assert list(payload) == ["summary", "classes", *SET_KEYS, "ood"]
    assert list(payload["summary"]) == SUMMARY_KEYS + [f"ood_{k}" for k in SUMMARY_KEYS]
    assert payload["classes"] == ["road", "car", "tree"]
    assert list(payload["ood"]) == SET_KEYS
    for part in (payload, payload["ood"]):
        zs = part["zero_shot"]
        assert list(zs) == ["all", "visible", "teacher_visible", "teacher_seen", "inside_fraction", "scans"]
        assert all(list(zs[k]) == SCORE_KEYS for k in ("all", "visible", "teacher_visible"))
        assert zs["teacher_seen"] == ["road", "tree"] and zs["inside_fraction"] == 0.75 and zs["scans"] == 2
        assert zs["all"]["confusion"] == [[8, 2, 0], [1, 3, 0], [0, 0, 5]]
        assert zs["all"]["iou"] == {"road": pytest.approx(8 / 11), "car": 0.5, "tree": 1.0}
        assert list(part["structure"]) == ["gap", "gap_balanced", "cka", "knn_agreement", "teacher_knn_agreement"]
        assert list(part["linear_probe"]) == ["scans", "train_points", *SCORE_KEYS]
        assert part["linear_probe"]["scans"] == 1 and part["linear_probe"]["train_points"] == 100
        assert [list(ft) for ft in part["finetune"]] == [["fraction", "scans", "steps", *SCORE_KEYS]] * 2
        assert [(ft["fraction"], ft["scans"], ft["steps"]) for ft in part["finetune"]] == [(0.01, 1, 5), (0.1, 2, 5)]
    assert payload["structure"] == {"gap": 0.1, "gap_balanced": 0.2, "cka": 0.3, "knn_agreement": 0.4,
                                    "teacher_knn_agreement": 0.5}
    summary = payload["summary"]
    by_hand = {"zero_shot_miou": (8 / 11 + 0.5 + 1.0) / 3, "zero_shot_miou_seen": (8 / 11 + 1.0) / 2,
               "zero_shot_miou_visible": 1.0, "zero_shot_miou_visible_seen": 1.0,  # tree absent from the truth
               "teacher_miou_visible": (8 / 11 + 0.5 + 1.0) / 3, "teacher_seen_classes": 2.0, "probe_miou": 1.0,
               "probe_miou_seen": 1.0, "gap": 0.1, "ood_gap": 0.6, "finetune_miou_1pct": 1.0,
               "finetune_miou_10pct": (8 / 11 + 0.5 + 1.0) / 3}
    assert {k: summary[k] for k in by_hand} == pytest.approx(by_hand)
    assert summary == pytest.approx(result.summary())
