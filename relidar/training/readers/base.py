"""The one interface every dataset reader implements, and ``open_dataset``, which picks the reader from the path.

A reader indexes its dataset at construction (file names, timestamps, table rows) and decodes a frame
only when it is asked for, so opening a large log is cheap and ``reader[i]`` can be called from any
worker that owns a share of the frames.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

from relidar.core.errors import RelidarError
from relidar.core.frame import Frame


class DatasetError(RelidarError, ValueError):
    """A dataset path or option that cannot be read; the message names the path, what is missing and the fix."""


class FrameIndexError(DatasetError, IndexError):
    """A frame index outside the dataset (an IndexError too, for code that indexes readers like sequences)."""


class Reader(ABC):
    """A random-access sequence of :class:`~relidar.core.frame.Frame`.

    Subclasses set ``name`` (the format), fill ``_frame_ids`` while indexing, and implement
    :meth:`_load`. ``class_names`` is empty for unlabelled data; labels use ``ignore_index`` for points
    outside the evaluation classes.
    """

    name: str = ""
    ignore_index: int = -1

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._frame_ids: list[str] = []
        # What the reader assumed or skipped while indexing (e.g. ignored distortion), for the CLI to show.
        self.notes: list[str] = []

    @property
    def frame_ids(self) -> list[str]:
        return list(self._frame_ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        return ()

    def __len__(self) -> int:
        return len(self._frame_ids)

    def __getitem__(self, index: int) -> Frame:
        n = len(self)
        if not isinstance(index, int):
            raise TypeError(f"{type(self).__name__} indices must be int, got {type(index).__name__}")
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise FrameIndexError(f"frame {index} out of range: the dataset has {n} frames", path=self.root,
                                  field="frame", hint=f"pick a frame in {-n}..{n - 1}" if n else None)
        return self._load(i)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self._load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, frames={len(self)})"

    @abstractmethod
    def _load(self, index: int) -> Frame:
        """Decode frame ``index`` (already range-checked)."""


def require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"no {path.name}/ folder in {path.parent}", path=path, hint=f"expected {expected}")
    return path


FORMATS_HELP = (
    "a nuScenes root (with a v1.0-*/ table folder), a SemanticKITTI root (with sequences/) or one "
    "sequence folder (velodyne/, calib.txt), a KITTI object folder (velodyne/, image_2/, calib/) or "
    "single frame (velodyne.bin, image_2.png, calib.txt), a rosbag2 folder (metadata.yaml) or a "
    ".mcap/.db3 file"
)


def detect_format(path: str | Path) -> str:
    """The reader name for ``path`` (``nuscenes``, ``semantickitti``, ``kitti_object``, ``rosbag``)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError("does not exist", path=p, hint=f"expected {FORMATS_HELP}")
    if p.is_file():
        if p.suffix.lower() in (".mcap", ".db3"):
            return "rosbag"
        raise DatasetError(f"a file of unknown kind {p.suffix!r}", path=p, hint=f"expected {FORMATS_HELP}")
    if (p / "metadata.yaml").is_file():
        return "rosbag"
    if any(c.is_dir() and c.name.startswith("v1.0-") for c in p.iterdir()):
        return "nuscenes"
    if (p / "sequences").is_dir():
        return "semantickitti"
    if (p / "velodyne").is_dir() and (p / "calib.txt").is_file():
        return "semantickitti"  # one SemanticKITTI/odometry sequence folder
    if (p / "velodyne").is_dir() or (p / "velodyne.bin").is_file():
        return "kitti_object"
    found = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir())[:12]
    raise DatasetError(f"not a dataset relidar can read (it holds: {', '.join(found) or 'nothing'})", path=p,
                       hint=f"expected {FORMATS_HELP}")


# Format name -> (module, class); imported on use so that opening one format never imports another's library.
READERS: dict[str, tuple[str, str]] = {
    "nuscenes": ("relidar.training.readers.nuscenes", "NuScenesReader"),
    "semantickitti": ("relidar.training.readers.semantickitti", "SemanticKittiReader"),
    "kitti_object": ("relidar.training.readers.kitti_object", "KittiObjectReader"),
    "rosbag": ("relidar.training.readers.rosbag", "RosbagReader"),
    "synthetic": ("relidar.training.readers.synthetic", "SyntheticReader"),  # generated, never detected from a path
}
FORMATS: tuple[str, ...] = tuple(READERS)


def reader_class(fmt: str) -> type[Reader]:
    """The reader class of a format name."""
    if fmt not in READERS:
        raise DatasetError(f"unknown dataset format {fmt!r}", field="format", hint=f"choose one of {', '.join(FORMATS)}")
    module, cls = READERS[fmt]
    return getattr(importlib.import_module(module), cls)


def open_dataset(path: str | Path, fmt: str | None = None, **options: Any) -> Reader:
    """Open ``path`` with the reader its layout calls for (or the one ``fmt`` names).

    ``options`` go to that reader's constructor (e.g. ``sequences=["08"]`` for SemanticKITTI,
    ``lidar_topic=...`` for a bag); an option the reader does not take is a :class:`DatasetError`
    listing the ones it does.
    """
    fmt = fmt or detect_format(path)
    cls = reader_class(fmt)
    params = inspect.signature(cls.__init__).parameters
    accepted = [n for n, prm in params.items() if n not in ("self", "path") and prm.kind is prm.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"{fmt} reader has no option {', '.join(map(repr, unknown))}", field=unknown[0],
                           hint=f"its options are: {', '.join(accepted) or 'none'}")
    return cls(Path(path), **options)


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings (CLI ``--option``) into reader options; values are parsed as YAML scalars/lists."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise DatasetError(f"reader option {item!r} must look like key=value", field=item,
                               hint='e.g. sequences=["08"]')
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out
