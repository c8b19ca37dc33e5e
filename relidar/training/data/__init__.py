"""Training data over a teacher feature cache, in three parts along its seams:

- :mod:`~relidar.training.data.caches`: which caches a run reads (built from the synthetic world first
  where asked) and their split into training and held-out scans;
- :mod:`~relidar.training.data.batches`: a scan's drawn sample, the sparse batch several scans are
  collated into, and that batch packed for the trip to the GPU;
- :mod:`~relidar.training.data.dataset`: the samples of a cache (stateless randomness: a step's batch is a
  function of the step number), each step's batch, and the DataLoader preparing them ahead of the step.
"""

from relidar.training.data.batches import Batch, PackedBatch, ScanSample, collate
from relidar.training.data.caches import (
    Split,
    build_synthetic_cache,
    ensure_cache,
    share_projection,
    split_data,
    synthetic_vocabulary,
)
from relidar.training.data.dataset import (
    DistillDataset,
    StepBatches,
    global_batch_positions,
    loader_workers,
    rank_share,
    step_loader,
    steps_per_epoch,
)
from relidar.training.data.errors import DataError

__all__ = [
    "Batch", "DataError", "DistillDataset", "PackedBatch", "ScanSample", "Split", "StepBatches", "build_synthetic_cache",
    "collate", "ensure_cache", "global_batch_positions", "loader_workers", "rank_share", "share_projection",
    "split_data", "step_loader", "steps_per_epoch", "synthetic_vocabulary",
]
