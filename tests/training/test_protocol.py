"""The paper's protocol in the tool: held-out scans from their own cache, batch-wide pair draws, an optimizer
per loss, and shipped configs that say where every held-out, out-of-distribution and comparison setting is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_distill import tiny_config_tree, write_config

from relidar.core.config import ConfigError, load_config
from relidar.training.compare import ComparePlan
from relidar.training.config import DataConfig, DistillConfig
from relidar.training.data import DataError, DistillDataset, split_data
from relidar.training.distill import build_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DistillConfig:
    tmp = tmp_path_factory.mktemp("protocol")
    cfg = load_config(write_config(tmp / "c.yaml", tiny_config_tree(tmp / "cache", frames=4)), DistillConfig)
    split_data(cfg.data)
    return cfg


def test_held_out_scans_come_from_their_own_cache(tiny: DistillConfig) -> None:
    split = split_data(tiny.data)
    assert split.train == (0, 1, 2, 3) and split.val == (0, 1)
    assert split.val_cache.root != split.train_cache.root
    # another street: no held-out frame id is a training one
    assert not set(split.val_cache.frame_ids) & set(split.train_cache.frame_ids)
    tail = split_data(DataConfig.model_validate({**tiny.data.model_dump(), "val": None, "val_fraction": 0.25}))
    assert tail.train == (0, 1, 2) and tail.val == (3,) and tail.val_cache is tail.train_cache
    with pytest.raises(ValueError, match="not both"):
        DataConfig.model_validate({**tiny.data.model_dump(), "val_fraction": 0.25})


def test_held_out_cache_must_match_the_training_one(tiny: DistillConfig, tmp_path: Path) -> None:
    other = tiny_config_tree(tmp_path / "wide")["data"]["val"]
    other["synthetic"]["teacher"]["feature_dim"] = 24
    data = DataConfig.model_validate({**tiny.data.model_dump(), "val": other})
    with pytest.raises(DataError, match="same teacher"):
        split_data(data)


def test_batch_scope_draws_pairs_over_the_batch(tiny: DistillConfig) -> None:
    split = split_data(tiny.data)
    sampling = tiny.sampling.model_copy(update={"scope": "batch", "pairs_per_batch": 300})
    dataset = DistillDataset(split.train_cache, split.train, sampling, tiny.augment, seed=5)
    samples = dataset.batch([0, 1, 2], epoch=0, step_in_epoch=0)
    counts = [len(s.pair_point) for s in samples]
    assert sum(counts) == 300 and all(c > 0 for c in counts)
    for s in samples:
        assert len(np.unique(s.pair_point)) == len(s.pair_point)  # without replacement
    again = dataset.batch([0, 1, 2], epoch=0, step_in_epoch=0)
    assert [len(s.pair_point) for s in again] == counts  # stateless: the same step draws the same pairs
    assert all(np.array_equal(a.pair_point, b.pair_point) for a, b in zip(samples, again))
    # a rank's share of a data-parallel batch draws its part of the pairs
    assert sum(len(s.pair_point) for s in dataset.batch([0], 0, 0, rank=1, world_size=2)) == 150
    scan = DistillDataset(split.train_cache, split.train, sampling.model_copy(update={"scope": "scan",
                                                                                     "pairs_per_scan": 40}),
                          tiny.augment, seed=5)
    assert [len(s.pair_point) for s in scan.batch([0, 1, 2], 0, 0)] == [40, 40, 40]


def test_optimizer_per_loss() -> None:
    cfg = DistillConfig.model_validate({
        "data": {"cache": "unused"},
        "optimizer": {"name": "sgd", "lr": 0.5, "dampening": 0.1,
                      "per_loss": {"similarity": {"name": "adamw", "lr": 0.002, "weight_decay": 0.03}}}})
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model, cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"type": "contrastive"})}))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 0.5 and sgd.defaults["dampening"] == 0.1
    adamw = build_optimizer(model, cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"type": "similarity"})}))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 0.002
    assert adamw.defaults["weight_decay"] == 0.03


def test_shipped_configs_follow_the_protocol() -> None:
    synth = load_config(CONFIGS / "synthetic_relational.yaml", DistillConfig)
    # train and validation on different streets; out of distribution: another world and another sensor
    seeds = {synth.data.synthetic.world.seed, synth.data.val.synthetic.world.seed,
             synth.data.selection.synthetic.world.seed, synth.eval.ood.synthetic.world.seed,
             synth.eval.ood.val.synthetic.world.seed}
    assert len(seeds) == 5  # the validation street (selection) is a street of its own
    assert synth.eval.ood.synthetic.world.lidar.beams != synth.data.synthetic.world.lidar.beams
    assert synth.sampling.scope == "batch" and synth.eval.few_shot.finetune_fractions == [0.01, 0.1]
    for name in ("nuscenes_relational.yaml", "semantickitti_relational.yaml"):
        real = load_config(CONFIGS / name, DistillConfig)
        assert real.data.val is not None and real.data.val_fraction == 0  # the official validation split's cache
        assert real.sampling.scope == "batch" and real.sampling.pairs_per_batch == 4096
        assert real.loss.temperature == 0.07 and real.eval.few_shot.probe_fraction == 1.0
        text = (CONFIGS / name).read_text()
        assert "[SLidR]" in text and "[Rel]" in text  # every adopted setting names its source
    assert "split=train" in (CONFIGS / "nuscenes_relational.yaml").read_text()
    assert '"08"' in (CONFIGS / "semantickitti_relational.yaml").read_text()
    plan = load_config(CONFIGS / "compare_synthetic.yaml", ComparePlan)
    assert plan.seeds >= 5 and [c.key for c in plan.claims()] == [
        "rel_gt_con_zero_shot", "rel_gt_sim_few_shot", "rel_gt_sim_few_shot_ood", "gap_vs_zero_shot", "gap_vs_few_shot"]
    assert all(s.predict for s in plan.teacher_switches.values())
    # issue 23: budgets, the pre-registered grid per loss, the controls that test the explanations
    assert plan.budgets == [1, 4] and plan.schedule == "constant" and plan.fixed_setting
    assert plan.selection is not None and plan.selection.lr_factors == pytest.approx([1 / 3, 1, 3])
    assert plan.selection.temperatures == [0.04, 0.07, 0.1]
    assert plan.teacher_switches["no_cone"].losses == ["contrastive", "similarity", "relational"]
    assert plan.teacher_switches["balanced_sampling"].config == {"sampling": {"mode": "balanced"}}
    nusc = load_config(CONFIGS / "nuscenes_relational.yaml", DistillConfig)
    assert nusc.data.selection is not None and nusc.data.selection.cache not in (nusc.data.cache, nusc.data.val.cache)
    nusc_plan = load_config(CONFIGS / "compare_nuscenes.yaml", ComparePlan)
    assert nusc_plan.selection is not None and nusc_plan.budgets == [1, 5]
    with pytest.raises(ConfigError):
        load_config(CONFIGS / "compare_synthetic.yaml", ComparePlan, ["seeds=1"])
