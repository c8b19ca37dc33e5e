"""The classes a segmenter tells apart: names, the words prompts use for them, display colours and
their text embeddings. Numpy only: the ROS node loads this from a model bundle without PyTorch.

On disk a vocabulary is two files side by side: ``<name>.json`` (:class:`VocabularyFile`: names,
synonyms, colours, templates, the text encoder's typed spec, embedding shape and sha256) and
``<name>.embeddings.npy`` ([C, D] float32, rows unit-norm). This module owns that format, reader and
writer. It also holds the class lists relidar knows (nuScenes, SemanticKITTI) and the one rule for
valid class names (:func:`check_class_names`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydantic import Field

from relidar.core.artifact import member_path, read_manifest, sha256_bytes, write_json
from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.core.rows import unit_rows
from relidar.core.text.spec import TextEncoderSpec
from relidar.core.viz.palette import class_colour

VOCABULARY_FORMAT_VERSION = 2


class VocabularyError(RelidarError, ValueError):
    """A vocabulary file or its contents are invalid; ``path`` the file, ``field`` the entry at fault."""


def check_class_names(names: Sequence[str]) -> tuple[str, ...]:
    """Class names as a vocabulary, the Segmenter and class lists accept them: at least one, each a
    non-blank string, no name twice. Returns them stripped."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise VocabularyError(f"must be a list of names, got {names!r}", field="class_names")
    stripped = tuple(n.strip() for n in names)
    if not stripped or any(not n for n in stripped):
        raise VocabularyError(f"must be a non-empty list of non-empty names, got {list(names)}", field="class_names")
    repeated = sorted({n for n in stripped if stripped.count(n) > 1})
    if repeated:
        raise VocabularyError(f"names must be unique; repeated: {repeated}", field="class_names")
    return stripped


@dataclass(frozen=True)
class ClassSpec:
    """One class: its name (as in the dataset's label list), the words prompts use for it and its colour."""

    name: str
    synonyms: tuple[str, ...]
    color: tuple[int, int, int]


# Written for this project: short scene descriptions in the style of CLIP's prompt ensembles, biased
# towards what a car's cameras see. Each contains one "{}" that a class synonym fills.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a dark photo of a {}.",
    "a bright photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a {} in the street.",
    "a photo of a {} on the road.",
    "a street scene with a {}.",
    "a driving scene with a {}.",
    "a dashcam photo of a {}.",
    "there is a {} in the scene.",
    "a photo of a {} seen from a car.",
    "a photo of a {} at night.",
)

NUSCENES_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("barrier", ("barrier", "concrete barrier", "road barrier", "guard rail"), class_colour("barrier")),
    ClassSpec("bicycle", ("bicycle", "bike"), class_colour("bicycle")),
    ClassSpec("bus", ("bus", "city bus", "coach"), class_colour("bus")),
    ClassSpec("car", ("car", "sedan", "suv", "van"), class_colour("car")),
    ClassSpec("construction_vehicle", ("construction vehicle", "excavator", "crane", "bulldozer"), class_colour("construction_vehicle")),
    ClassSpec("motorcycle", ("motorcycle", "motorbike", "scooter"), class_colour("motorcycle")),
    ClassSpec("pedestrian", ("pedestrian", "person", "people walking"), class_colour("pedestrian")),
    ClassSpec("traffic_cone", ("traffic cone", "cone"), class_colour("traffic_cone")),
    ClassSpec("trailer", ("trailer", "semi-trailer", "cargo trailer"), class_colour("trailer")),
    ClassSpec("truck", ("truck", "lorry", "pickup truck"), class_colour("truck")),
    ClassSpec("driveable_surface", ("road", "street", "asphalt road", "lane"), class_colour("driveable_surface")),
    ClassSpec("other_flat", ("traffic island", "median strip", "rail track", "curb"), class_colour("other_flat")),
    ClassSpec("sidewalk", ("sidewalk", "pavement", "footpath"), class_colour("sidewalk")),
    ClassSpec("terrain", ("grass", "grassland", "soil", "sand", "lawn"), class_colour("terrain")),
    ClassSpec("manmade", ("building", "wall", "fence", "pole", "traffic sign", "bridge"), class_colour("manmade")),
    ClassSpec("vegetation", ("tree", "trees", "bush", "hedge", "vegetation"), class_colour("vegetation")),
)

# Colours: the one palette (relidar.core.viz.palette), by class name.
SEMANTIC_KITTI_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("car", ("car", "sedan", "van"), class_colour("car")),
    ClassSpec("bicycle", ("bicycle", "bike"), class_colour("bicycle")),
    ClassSpec("motorcycle", ("motorcycle", "motorbike"), class_colour("motorcycle")),
    ClassSpec("truck", ("truck", "lorry"), class_colour("truck")),
    ClassSpec("other-vehicle", ("bus", "trailer", "tram", "caravan"), class_colour("other-vehicle")),
    ClassSpec("person", ("person", "pedestrian", "people walking"), class_colour("person")),
    ClassSpec("bicyclist", ("bicyclist", "cyclist", "person riding a bicycle"), class_colour("bicyclist")),
    ClassSpec("motorcyclist", ("motorcyclist", "person riding a motorcycle"), class_colour("motorcyclist")),
    ClassSpec("road", ("road", "street", "asphalt road"), class_colour("road")),
    ClassSpec("parking", ("parking lot", "parking space"), class_colour("parking")),
    ClassSpec("sidewalk", ("sidewalk", "pavement", "footpath"), class_colour("sidewalk")),
    ClassSpec("other-ground", ("traffic island", "median strip", "gravel"), class_colour("other-ground")),
    ClassSpec("building", ("building", "house", "wall"), class_colour("building")),
    ClassSpec("fence", ("fence", "railing", "guard rail"), class_colour("fence")),
    ClassSpec("vegetation", ("vegetation", "bush", "hedge", "tree crown"), class_colour("vegetation")),
    ClassSpec("trunk", ("tree trunk", "trunk"), class_colour("trunk")),
    ClassSpec("terrain", ("grass", "soil", "lawn", "terrain"), class_colour("terrain")),
    ClassSpec("pole", ("pole", "street light", "lamp post"), class_colour("pole")),
    ClassSpec("traffic-sign", ("traffic sign", "road sign", "street sign"), class_colour("traffic-sign")),
)

def class_prompts(synonyms: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every synonym (synonym-major order)."""
    return [template.format(word) for word in synonyms for template in templates]


def embed_classes(
    synonyms: Sequence[Sequence[str]],
    templates: Sequence[str],
    encode: Callable[[Sequence[str]], np.ndarray],
    batch_size: int = 256,
) -> np.ndarray:
    """[C, D] float32 class embeddings: per class, the mean of its prompts' unit embeddings, re-normalised.

    ``encode`` maps prompts to [P, D] rows (normalised or not; each row is normalised here first), so
    the training side (PyTorch text tower) and the node (ONNX text encoder) share this one rule.
    """
    if not templates:
        raise VocabularyError("at least one prompt template is needed", field="templates")
    for template in templates:
        if template.count("{}") != 1:
            raise VocabularyError(f"{template!r} must contain exactly one '{{}}' for the class word", field="templates")
    prompts: list[str] = []
    owner: list[int] = []
    for c, words in enumerate(synonyms):
        if not words:
            raise VocabularyError("a class needs at least one word", field=f"synonyms[{c}]")
        these = class_prompts(words, templates)
        prompts.extend(these)
        owner.extend([c] * len(these))
    chunks = [np.asarray(encode(prompts[i : i + batch_size]), dtype=np.float64) for i in range(0, len(prompts), batch_size)]
    emb = np.concatenate(chunks, axis=0)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise VocabularyError(f"the text encoder returned shape {emb.shape} for {len(prompts)} prompts; expected [P, D]",
                              field="encoder")
    unit_rows(emb)
    sums = np.zeros((len(synonyms), emb.shape[1]))
    np.add.at(sums, np.asarray(owner), emb)
    unit_rows(sums)
    return sums.astype(np.float32)


def _embeddings_path(json_path: Path) -> Path:
    return json_path.with_name(json_path.stem + ".embeddings.npy")


class VocabularyFile(StrictModel):
    """``<name>.json`` of a vocabulary (the embeddings are in the ``.npy`` file it names)."""

    format_version: int
    encoder: TextEncoderSpec = Field(..., description="the text encoder that made the embeddings")
    class_names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    colors: tuple[tuple[int, int, int], ...] = Field(..., description="RGB 0..255 per class")
    templates: tuple[str, ...]
    embeddings_file: str
    embeddings_shape: tuple[int, int]
    embeddings_sha256: str


@dataclass(frozen=True)
class Vocabulary:
    """Class names, prompt words, colours [C,3] uint8 and text embeddings [C,D] float32 (unit rows), and the
    text encoder that made them."""

    class_names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    colors: np.ndarray
    embeddings: np.ndarray
    templates: tuple[str, ...]
    encoder: TextEncoderSpec

    def __post_init__(self) -> None:
        self._validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def _validate(self) -> None:
        check_class_names(self.class_names)
        c = len(self.class_names)
        if len(self.synonyms) != c:
            raise VocabularyError(f"{len(self.synonyms)} entries for {c} classes", field="synonyms")
        if self.colors.shape != (c, 3) or self.colors.dtype != np.uint8:
            raise VocabularyError(f"must be [{c},3] uint8, got {self.colors.shape} {self.colors.dtype}", field="colors")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != c or self.embeddings.dtype != np.float32:
            raise VocabularyError(f"must be [{c},D] float32, got {self.embeddings.shape} {self.embeddings.dtype}",
                                  field="embeddings")
        norms = np.linalg.norm(self.embeddings, axis=1)
        if not np.all(np.isfinite(norms)) or np.max(np.abs(norms - 1.0)) > 1e-3:
            raise VocabularyError(f"rows must be finite and unit-norm (norms {norms.min():.4f}..{norms.max():.4f})",
                                  field="embeddings")
        if self.encoder.feature_dim != self.feature_dim:
            raise VocabularyError(f"the text encoder is {self.encoder.feature_dim}-d but the embeddings are "
                                  f"{self.feature_dim}-d", field="encoder.feature_dim")

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and ``<stem>.embeddings.npy`` beside it, each atomically; returns ``path``."""
        path = Path(path)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.embeddings), allow_pickle=False)
        npy = buf.getvalue()
        emb_path = _embeddings_path(path)
        meta = VocabularyFile(
            format_version=VOCABULARY_FORMAT_VERSION,
            encoder=self.encoder,
            class_names=self.class_names,
            synonyms=self.synonyms,
            colors=tuple(tuple(int(c) for c in rgb) for rgb in self.colors),
            templates=self.templates,
            embeddings_file=emb_path.name,
            embeddings_shape=self.embeddings.shape,
            embeddings_sha256=sha256_bytes(npy),
        )
        atomic_write_bytes(emb_path, npy)
        write_json(path, meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        rebuild = "rebuild it with `relidar vocabulary build`"
        meta = read_manifest(path, VocabularyFile, VocabularyError, version=VOCABULARY_FORMAT_VERSION,
                             what="vocabulary file", missing_hint="check the path, or write one with `relidar "
                             "vocabulary build`", hint=rebuild)
        emb_path = member_path(path.parent, meta.embeddings_file, VocabularyError, manifest=path,
                               field="embeddings_file", hint=rebuild, folders=False)
        try:
            npy = emb_path.read_bytes()
        except FileNotFoundError as exc:
            raise VocabularyError(f"embeddings file named by {path.name} (field 'embeddings_file') not found",
                                  path=emb_path, hint="keep the .embeddings.npy file beside the .json") from exc
        except OSError as exc:  # a folder of that name, permissions
            raise VocabularyError(f"embeddings file named by {path.name} (field 'embeddings_file') cannot be read "
                                  f"({exc.strerror or exc})", path=emb_path, hint=rebuild) from exc
        if sha256_bytes(npy) != meta.embeddings_sha256:
            raise VocabularyError(f"contents do not match field 'embeddings_sha256' of {path.name} (file changed or "
                                  "truncated)", path=emb_path, hint=rebuild)
        try:
            embeddings = np.load(io.BytesIO(npy), allow_pickle=False)
        except ValueError as exc:
            raise VocabularyError(f"not a valid .npy array ({exc})", path=emb_path, hint=rebuild) from exc
        if tuple(embeddings.shape) != meta.embeddings_shape:
            raise VocabularyError(f"shape {embeddings.shape} differs from field 'embeddings_shape' "
                                  f"{list(meta.embeddings_shape)} in {path.name}", path=emb_path, hint=rebuild)
        colors = np.asarray(meta.colors, dtype=np.int64).reshape(-1, 3)
        if colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise VocabularyError("must be [C,3] integers in 0..255", path=path, field="colors")
        try:
            return cls(class_names=meta.class_names, synonyms=meta.synonyms, colors=colors.astype(np.uint8),
                       embeddings=embeddings, templates=meta.templates, encoder=meta.encoder)
        except VocabularyError as exc:
            raise VocabularyError(exc.message, path=path, field=exc.field, hint=rebuild) from exc

    def subset(self, names: Sequence[str]) -> "Vocabulary":
        """The named classes, in the given order."""
        index = {n: i for i, n in enumerate(self.class_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise VocabularyError(f"{missing} not in vocabulary {list(self.class_names)}", field="class_names")
        rows = [index[n] for n in names]
        return Vocabulary(
            class_names=tuple(names),
            synonyms=tuple(self.synonyms[i] for i in rows),
            colors=self.colors[rows],
            embeddings=self.embeddings[rows],
            templates=self.templates,
            encoder=self.encoder,
        )
