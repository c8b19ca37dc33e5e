"""The oracle control: its outputs score perfectly when its vectors are the text embeddings, and under the
similarity loss its vectors become the class means of the teacher's features (computed here directly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import load_config
from relidar.training.config import DistillConfig
from relidar.training.evaluate import evaluate_zero_shot, labelled_set, resolve_vocabulary
from relidar.training.oracle import OracleConfig, fit_oracle, oracle_outputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("oracle")
    cfg = load_config(write_config(tmp / "c.yaml", tiny_config_tree(tmp / "cache")), DistillConfig)
    vocabulary = resolve_vocabulary(cfg)
    return cfg, vocabulary, labelled_set("tiny", cfg.data, vocabulary, None)


def test_text_vectors_score_perfectly(tiny) -> None:
    cfg, vocabulary, data = tiny
    zs = evaluate_zero_shot(None, data, vocabulary, torch.device("cpu"), gap_pairs=512,
                            outputs=oracle_outputs(vocabulary.embeddings, cfg))
    assert zs.all_points.miou == pytest.approx(1.0) and zs.visible.miou == pytest.approx(1.0)
    assert zs.structure.knn_agreement == pytest.approx(1.0)  # identical vectors within a class


def test_similarity_oracle_is_the_class_mean_direction(tiny) -> None:
    cfg, vocabulary, data = tiny
    tree = cfg.model_dump(mode="json")
    tree["loss"] = {"type": "similarity"}
    tree["sampling"]["pairs_per_batch"] = 100_000  # every labelled pair each step: the exact optimum
    sim = DistillConfig.model_validate(tree)
    vectors = fit_oracle(data, sim, vocabulary.num_classes, OracleConfig(steps=300, lr=0.05))
    # reference: mean of the unit teacher features of each class's labelled pairs, normalised
    sums = np.zeros_like(vectors, dtype=np.float64)
    for frame in data.train:
        cached = data.train_cache[frame]
        labels = data.labels(cached)[cached.pair_point]
        ok = labels >= 0
        np.add.at(sums, labels[ok], cached.pair_features[ok].astype(np.float64))
    present = np.linalg.norm(sums, axis=1) > 0
    mean = sums[present] / np.linalg.norm(sums[present], axis=1, keepdims=True)
    cosines = (vectors[present] * mean).sum(axis=1)
    assert cosines.min() > 0.99, cosines
