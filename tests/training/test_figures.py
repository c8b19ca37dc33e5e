"""The reports' one figure helper (relidar.training.figures): an off-screen figure written as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from relidar.training.figures import new_figure, save_png


def test_figure_is_written_as_a_png_cropped_on_white(tmp_path: Path) -> None:
    fig = new_figure(4.0, 2.0)
    assert tuple(fig.get_size_inches()) == (4.0, 2.0) and fig.dpi == 100
    ax = fig.add_subplot(1, 1, 1)
    ax.bar([0, 1], [1.0, 2.0], color="black")
    ax.set_axis_off()
    path = tmp_path / "bars.png"
    assert save_png(fig, path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png"]  # no temporary file left beside it
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    # bbox_inches="tight" crops the empty margins of the 400 x 200 canvas; the background is white
    assert pixels.shape[0] < 200 and pixels.shape[1] < 400
    assert (pixels[0, 0] == 255).all() and (pixels == 0).all(axis=2).any()
