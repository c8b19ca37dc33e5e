"""The synthetic world as a dataset: its first ``frames`` steps, generated when a frame is asked for.

Nothing is read from disk: frame ``i`` is ``SyntheticWorld(world).sample(i).frame``, with the world's
labels. The renderer's masks of every frame read go into ``truth`` when one is given (a simulated
teacher's :class:`~relidar.synthetic.truth.TruthStore`), which is how the version-2 teacher reads the
masks of the images it is handed while a cache is prepared from this reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from relidar.core.config import validate
from relidar.core.frame import Frame
from relidar.synthetic.classes import CLASS_NAMES, IGNORE_INDEX
from relidar.synthetic.truth import TruthStore
from relidar.synthetic.world import SynthConfig, SyntheticWorld
from relidar.training.readers.base import DatasetError, Reader


class SyntheticReader(Reader):
    """``frames`` steps of the world ``world`` describes; ``root`` is where its frames are going (the cache
    being prepared), for messages only."""

    name = "synthetic"

    def __init__(self, root: Path, *, frames: int, world: SynthConfig | Mapping[str, Any] | None = None,
                 truth: TruthStore | None = None) -> None:
        super().__init__(root)
        if frames < 1:
            raise DatasetError(f"frames is {frames}", path=root, field="frames", hint="ask for at least one frame")
        config = validate(SynthConfig, world if world is not None else {}, error=DatasetError, path=root,
                          what="synthetic world", hint="see SynthConfig's fields")
        self.world = SyntheticWorld(config)
        self.truth = truth
        self.ignore_index = IGNORE_INDEX
        self._frame_ids = [f"synth_{config.seed:04d}_{i:06d}" for i in range(frames)]

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def _load(self, index: int) -> Frame:
        sample = self.world.sample(index)
        if self.truth is not None:
            self.truth.add_sample(sample)  # the version-2 teacher reads the renderer's masks of these images
        return sample.frame
