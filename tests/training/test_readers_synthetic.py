"""The synthetic world behind the readers' interface: the frames are the world's own, the renderer's masks go
to the store it is given, and bad options are refused with their field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relidar.synthetic.truth import TruthStore
from relidar.synthetic.world import SynthConfig, SyntheticWorld
from relidar.training.readers.base import DatasetError, open_dataset, reader_class
from relidar.training.readers.synthetic import SyntheticReader

WORLD = {"seed": 4, "lidar": {"beams": 8, "horizontal_resolution_deg": 3.0, "max_range": 30.0},
         "cameras": {"names": ["front"], "width": 64, "height": 36}}


def test_frames_are_the_worlds_and_masks_reach_the_store(tmp_path: Path) -> None:
    truth = TruthStore()
    reader = open_dataset(tmp_path, "synthetic", frames=2, world=WORLD, truth=truth)
    assert reader_class("synthetic") is SyntheticReader and isinstance(reader, SyntheticReader)
    assert reader.frame_ids == ["synth_0004_000000", "synth_0004_000001"] and len(truth) == 0
    world = SyntheticWorld(SynthConfig.model_validate(WORLD))
    for i, frame in enumerate(reader):
        expected = world.sample(i)
        np.testing.assert_array_equal(frame.points, expected.frame.points)
        np.testing.assert_array_equal(frame.labels, expected.frame.labels)
        np.testing.assert_array_equal(frame.cameras[0].image, expected.frame.cameras[0].image)
        np.testing.assert_array_equal(truth.lookup(frame.cameras[0].image).classes, expected.camera_truth[0].classes)
    assert len(truth) == 2
    assert reader.class_names == expected.frame.class_names and reader.ignore_index == expected.frame.ignore_index
    last = reader[-1]
    np.testing.assert_array_equal(last.points, world.sample(1).frame.points)


def test_bad_options_name_their_field(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path, "synthetic", frames=2, world={"lidar": {"beam": 8}})
    assert info.value.field == "lidar.beam"
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path, "synthetic", frames=0)
    assert info.value.field == "frames"
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path, "synthetic", frames=2, sequences=["00"])
    assert info.value.field == "sequences"
    with pytest.raises(IndexError):
        open_dataset(tmp_path, "synthetic", frames=2, world=WORLD)[2]
