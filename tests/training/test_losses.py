"""Each loss against values computed by hand on N=2..3 pairs, and at its minimum."""

from __future__ import annotations

import math

import pytest
import torch

from relidar.training.losses import (
    LossConfig,
    batch_loss,
    contrastive_loss,
    pool_superpixels,
    relational_loss,
    relational_terms,
    scan_loss,
    similarity_loss,
)

# K rows are unit; Q row 1 is (0.6, 0.8): every product below is a round number.
K = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
Q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_similarity_by_hand() -> None:
    # cos(k0,q0) = 1, cos(k1,q1) = 0.8 -> mean(0, 0.2)
    assert similarity_loss(K, Q).item() == pytest.approx(0.1, abs=1e-6)


def test_similarity_normalises_rows() -> None:
    assert similarity_loss(3.0 * K, 0.5 * Q).item() == pytest.approx(0.1, abs=1e-6)


def test_relational_by_hand() -> None:
    # KKᵀ = I, QQᵀ = [[1, .6], [.6, 1]] -> intra = .6
    # KQᵀ = [[1, .6], [0, .8]] -> diag |.| = (0 + .2)/2 = .1 ; off-diag |KQᵀ-QQᵀ| = (0 + .6)/2 = .3
    t = relational_terms(K, Q)
    assert t.intra.item() == pytest.approx(0.6, abs=1e-6)
    assert t.cross_diag.item() == pytest.approx(0.1, abs=1e-6)
    assert t.cross_offdiag.item() == pytest.approx(0.3, abs=1e-6)
    assert relational_loss(K, Q).item() == pytest.approx(1.0, abs=1e-6)
    # each of the three terms weighted on its own
    assert relational_loss(K, Q, intra_weight=2.0, cross_diag_weight=0.5, cross_offdiag_weight=0.0).item() == \
        pytest.approx(1.2 + 0.05, abs=1e-6)
    assert relational_loss(K, Q, 0.0, 0.0, 3.0).item() == pytest.approx(0.9, abs=1e-6)
    cfg = LossConfig(type="relational", intra_weight=0.0, cross_diag_weight=1.0, cross_offdiag_weight=0.0)
    assert scan_loss(cfg, K, Q)["total"].item() == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        LossConfig(type="relational", intra_weight=0.0, cross_diag_weight=0.0, cross_offdiag_weight=0.0)


def test_contrastive_by_hand() -> None:
    # logits = KQᵀ/τ with τ = 1: rows [1, .6] (target 0) and [0, .8] (target 1)
    expected = 0.5 * (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(-0.8)))
    assert contrastive_loss(K, Q, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)
    expected_t = 0.5 * (math.log(1 + math.exp(-0.4 / 0.5)) + math.log(1 + math.exp(-0.8 / 0.5)))
    assert contrastive_loss(K, Q, temperature=0.5).item() == pytest.approx(expected_t, abs=1e-6)


def test_superpixel_pooling_by_hand() -> None:
    # Points 0 and 1 share superpixel 7: K pools to (.5, .5), Q to (.8, .4); point 2 alone in superpixel 3.
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    sp = torch.tensor([7, 7, 3])
    pk, pq = pool_superpixels(k, q, sp)
    # unique ids sort ascending: superpixel 3 first
    assert torch.allclose(pk, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert torch.allclose(pq, torch.tensor([[0.0, 1.0], [0.8, 0.4]]))
    a = pk / pk.norm(dim=1, keepdim=True)
    b = pq / pq.norm(dim=1, keepdim=True)
    logits = a @ b.T
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(2)).item()
    assert contrastive_loss(k, q, temperature=1.0, superpixels=sp).item() == pytest.approx(expected, abs=1e-6)
    # ids < 0 (unpaired) are left out
    pk2, _ = pool_superpixels(k, q, torch.tensor([7, 7, -1]))
    assert pk2.shape == (1, 2)


def test_minimum_when_features_equal_targets() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(16, 8, generator=g)
    assert similarity_loss(q, q).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_loss(q, q).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_loss(q, q + 0.3 * torch.randn(16, 8, generator=g)).item() > 0.01


def test_contrastive_minimised_by_separated_features() -> None:
    q = torch.eye(4)
    matched = contrastive_loss(q, q, temperature=0.07).item()
    shuffled = contrastive_loss(q[[1, 2, 3, 0]], q, temperature=0.07).item()
    assert matched < 1e-5
    assert shuffled > 10.0


def test_gradients_flow_and_loss_decreases() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(12, 6, generator=g), dim=1)
    for name in ("contrastive", "similarity", "relational"):
        k = torch.randn(12, 6, generator=g, requires_grad=True)
        opt = torch.optim.SGD([k], lr=0.5)
        cfg = LossConfig(type=name, temperature=0.5)
        first = scan_loss(cfg, k, q)["total"].item()
        for _ in range(50):
            opt.zero_grad()
            scan_loss(cfg, k, q)["total"].backward()
            opt.step()
        assert scan_loss(cfg, k, q)["total"].item() < first, name


def test_combined_is_weighted_sum() -> None:
    cfg = LossConfig(type="combined", weights={"similarity": 2.0, "relational": 0.5})
    out = scan_loss(cfg, K, Q)
    assert out["total"].item() == pytest.approx(2.0 * 0.1 + 0.5 * 1.0, abs=1e-6)
    assert set(out) == {"similarity", "relational", "total"}
    with pytest.raises(ValueError):
        LossConfig(type="combined")


def test_batch_loss_is_mean_over_scans() -> None:
    k = torch.cat([K, Q])
    q = torch.cat([Q, Q])
    scans = torch.tensor([0, 0, 1, 1])
    cfg = LossConfig(type="similarity")
    # scan 0: 0.1, scan 1: K == Q -> 0
    assert batch_loss(cfg, k, q, scans, 2)["total"].item() == pytest.approx(0.05, abs=1e-6)
    # a scan with one pair has no relation and is skipped
    assert batch_loss(cfg, k[:3], q[:3], scans[:3], 2, scope="scan")["total"].item() == pytest.approx(0.1, abs=1e-6)


def test_batch_scope_is_one_loss_over_all_pairs() -> None:
    # Scan 0: pairs (K, Q); scan 1: one pair. Batch scope: one InfoNCE over the 3 pairs, so scan 0's
    # points see scan 1's pixel as a negative; scan scope drops scan 1 (a single pair) altogether.
    k = torch.cat([K, torch.tensor([[0.8, 0.6]])])
    q = torch.cat([Q, torch.tensor([[0.0, 1.0]])])
    scans = torch.tensor([0, 0, 1])
    cfg = LossConfig(type="contrastive", temperature=1.0)
    logits = k @ q.T
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(3)).item()
    assert batch_loss(cfg, k, q, scans, 2, scope="batch")["total"].item() == pytest.approx(expected, abs=1e-6)
    assert batch_loss(cfg, k, q, scans, 2, scope="scan")["total"].item() == pytest.approx(
        contrastive_loss(K, Q, temperature=1.0).item(), abs=1e-6)
    # relational relations span scans: the intra term of the batch is the mean over all 6 off-diagonal entries
    rel = LossConfig(type="relational")
    kn, qn = torch.nn.functional.normalize(k, dim=1), torch.nn.functional.normalize(q, dim=1)
    d = (kn @ kn.T - qn @ qn.T).abs()
    intra = (d.sum() - d.diagonal().sum()) / 6
    assert relational_terms(k, q).intra.item() == pytest.approx(intra.item(), abs=1e-6)
    assert batch_loss(rel, k, q, scans, 2)["total"].item() == pytest.approx(relational_loss(k, q).item(), abs=1e-6)


def test_batch_scope_superpixels_stay_per_scan() -> None:
    # Two scans both use superpixel id 0: in a batch they are two superpixels, not one.
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scans = torch.tensor([0, 1])
    sp = torch.tensor([0, 0])
    cfg = LossConfig(type="contrastive", temperature=1.0, superpixel_pooling=True)
    got = batch_loss(cfg, k, q, scans, 2, superpixels=sp)["total"].item()
    assert got == pytest.approx(contrastive_loss(k, q, temperature=1.0).item(), abs=1e-6)
