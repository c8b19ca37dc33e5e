"""The renderer's masks of each camera image, kept where the simulated teacher can find them.

The version-2 simulated teacher recognises objects by their shape, size and context, which it reads from
the renderer's class and instance masks (a stand-in for what a real vision-language model infers from
pixels). The teacher is still called with an image only (``Teacher.encode_image``), so the masks are
looked up by the image's content digest: from the world's samples in memory (``TruthStore.add_sample``)
or from the sidecar files the synthetic log writers put beside the images (``truth_2/NNNNNN.npz`` in a
SemanticKITTI sequence, ``<bag>_truth/`` beside a rosbag2 folder; ``TruthStore.scan``). A real dataset
has no such files: the version-2 teacher refuses its images with a clear error.

Sidecar format (``TRUTH_FORMAT_VERSION``): an ``.npz`` with ``classes`` int16, ``instances`` int64,
``depth`` float32, ``incidence`` float32 (all HxW), ``image_digest`` and ``format_version``.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relidar.core.atomic import atomic_path
from relidar.core.teacher import TeacherError

TRUTH_FORMAT_VERSION = 1
TRUTH_DIR_KITTI = "truth_2"  # beside image_2 in a SemanticKITTI sequence
TRUTH_SUFFIX_BAG = "_truth"  # <bag folder>_truth beside a rosbag2 folder


class TruthError(TeacherError):
    """A truth sidecar file is unreadable or of another format; the message names the file and the fix."""


@dataclass(frozen=True)
class ViewTruth:
    """What the renderer knows about one camera image (see ``relidar.synthetic.cameras.CameraRender``)."""

    classes: np.ndarray  # HxW int16 class index, -1 for sky
    instances: np.ndarray  # HxW int64 object id (negative: ground tile, 0: sky)
    depth: np.ndarray  # HxW float32 metres along the optical axis, inf for sky
    incidence: np.ndarray  # HxW float32 |cos| between viewing ray and surface normal


def image_digest(image: np.ndarray) -> str:
    """Content digest of an HxWx3 uint8 image (shape included): the key the teacher looks masks up by."""
    a = np.ascontiguousarray(image)
    return hashlib.blake2b(a.tobytes() + repr(a.shape).encode(), digest_size=16).hexdigest()


def write_truth(path: str | Path, image: np.ndarray, truth: ViewTruth) -> Path:
    """Write one image's masks atomically (compressed; instance maps are mostly runs)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, classes=truth.classes.astype(np.int16), instances=truth.instances.astype(np.int64),
                                depth=truth.depth.astype(np.float32), incidence=truth.incidence.astype(np.float32),
                                image_digest=np.array(image_digest(image)),
                                format_version=np.array(TRUTH_FORMAT_VERSION))
    return path


def _open(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise TruthError(f"{path}: not a readable truth file ({exc}); regenerate the log with `relidar synth`") from exc
    version = int(arrays.get("format_version", -1))
    if version != TRUTH_FORMAT_VERSION:
        raise TruthError(f"{path}: field 'format_version' is {version}, this relidar reads {TRUTH_FORMAT_VERSION}; "
                         "regenerate the log with `relidar synth`")
    return arrays


def read_truth(path: str | Path) -> tuple[str, ViewTruth]:
    """(image digest, masks) of a sidecar file."""
    a = _open(Path(path))
    try:
        truth = ViewTruth(classes=a["classes"], instances=a["instances"], depth=a["depth"],
                          incidence=a["incidence"].astype(np.float32))
        return str(a["image_digest"]), truth
    except KeyError as exc:
        raise TruthError(f"{path}: truth file lacks field {exc}; regenerate the log with `relidar synth`") from exc


def read_digest(path: str | Path) -> str:
    """Only the image digest of a sidecar file (cheap: one small member of the archive)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["image_digest"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise TruthError(f"{path}: not a readable truth file ({exc}); regenerate the log with `relidar synth`") from exc


class TruthStore:
    """Masks by image digest: recent in-memory entries (bounded) plus indexed sidecar files on disk."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = int(capacity)
        self._memory: OrderedDict[str, ViewTruth] = OrderedDict()
        self._files: dict[str, Path] = {}

    def __len__(self) -> int:
        return len(self._memory) + len(self._files)

    def add(self, image: np.ndarray, truth: ViewTruth) -> None:
        key = image_digest(image)
        self._memory[key] = truth
        self._memory.move_to_end(key)
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)

    def add_sample(self, sample) -> None:
        """Every camera of a ``SyntheticSample`` (the world's frame plus its renderer truth)."""
        for cam, truth in zip(sample.frame.cameras, sample.camera_truth):
            self.add(cam.image, truth)

    def add_file(self, path: str | Path) -> None:
        self._files[read_digest(path)] = Path(path)

    def scan(self, root: str | Path) -> int:
        """Index the sidecar files of a synthetic log at ``root`` (a SemanticKITTI root or sequence, or a
        rosbag2 folder); returns how many were found."""
        root = Path(root)
        found = sorted(root.glob(f"**/{TRUTH_DIR_KITTI}/*.npz")) if root.is_dir() else []
        bag_side = root.parent / (root.name + TRUTH_SUFFIX_BAG)
        if bag_side.is_dir():
            found += sorted(bag_side.glob("*.npz"))
        for path in found:
            self.add_file(path)
        return len(found)

    def lookup(self, image: np.ndarray) -> ViewTruth | None:
        key = image_digest(image)
        if key in self._memory:
            return self._memory[key]
        if key in self._files:
            digest, truth = read_truth(self._files[key])
            if digest != key:
                raise TruthError(f"{self._files[key]}: its image digest changed since it was indexed; rescan the log")
            return truth
        return None
