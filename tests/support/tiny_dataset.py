"""A small synthetic SemanticKITTI sequence on disk: a real dataset folder any process can open."""

from __future__ import annotations

from pathlib import Path


def write_synthetic_kitti(root: Path, frames: int = 5, seed: int = 0, beams: int = 16) -> Path:
    """Write ``frames`` sweeps of the synthetic world (front camera 128x72) under ``root``; returns ``root``."""
    from relidar.synthetic.world import SynthConfig, SyntheticWorld
    from relidar.synthetic.writers import SemanticKittiWriter

    world = SyntheticWorld(SynthConfig.model_validate({
        "seed": seed, "lidar": {"beams": beams, "horizontal_resolution_deg": 1.5, "max_range": 40.0},
        "cameras": {"width": 128, "height": 72}}))
    with SemanticKittiWriter(root) as writer:
        for i in range(frames):
            writer.write(world.sample(i))
    return root
