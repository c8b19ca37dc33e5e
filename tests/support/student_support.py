"""Helpers shared by the student tests."""

from __future__ import annotations

import torch


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so eval-mode outputs test them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
