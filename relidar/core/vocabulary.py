"""The classes a segmenter tells apart: names, the words prompts use for them, display colours and
their text embeddings. Numpy only: the ROS node loads this from a model bundle without PyTorch.

On disk a vocabulary is two files side by side: ``<name>.json`` (names, synonyms, colours, templates,
encoder, embedding shape and sha256) and ``<name>.embeddings.npy`` ([C, D] float32, rows unit-norm).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from relidar.core.atomic import atomic_write_bytes
from relidar.core.viz.palette import class_colour

VOCABULARY_FORMAT_VERSION = 1


class VocabularyError(ValueError):
    """A vocabulary file or its contents are invalid; the message names the file and the field."""


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

DEFAULT_CLASS_LISTS: dict[str, tuple[ClassSpec, ...]] = {
    "nuscenes": NUSCENES_CLASSES,
    "semantic_kitti": SEMANTIC_KITTI_CLASSES,
}


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
        raise VocabularyError("templates: at least one prompt template is needed")
    for template in templates:
        if template.count("{}") != 1:
            raise VocabularyError(f"templates: {template!r} must contain exactly one '{{}}' for the class word")
    prompts: list[str] = []
    owner: list[int] = []
    for c, words in enumerate(synonyms):
        if not words:
            raise VocabularyError(f"synonyms[{c}]: a class needs at least one word")
        these = class_prompts(words, templates)
        prompts.extend(these)
        owner.extend([c] * len(these))
    chunks = [np.asarray(encode(prompts[i : i + batch_size]), dtype=np.float64) for i in range(0, len(prompts), batch_size)]
    emb = np.concatenate(chunks, axis=0)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise VocabularyError(f"encoder returned shape {emb.shape} for {len(prompts)} prompts; expected [P, D]")
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((len(synonyms), emb.shape[1]))
    np.add.at(sums, np.asarray(owner), emb)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return sums.astype(np.float32)


def _embeddings_path(json_path: Path) -> Path:
    return json_path.with_name(json_path.stem + ".embeddings.npy")


@dataclass(frozen=True)
class Vocabulary:
    """Class names, prompt words, colours [C,3] uint8 and text embeddings [C,D] float32 (unit rows)."""

    class_names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    colors: np.ndarray
    embeddings: np.ndarray
    templates: tuple[str, ...]
    encoder: str

    def __post_init__(self) -> None:
        self._validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def _validate(self) -> None:
        c = len(self.class_names)
        if c == 0:
            raise VocabularyError("class_names is empty")
        if len(set(self.class_names)) != c:
            raise VocabularyError(f"class_names has duplicates: {list(self.class_names)}")
        if len(self.synonyms) != c:
            raise VocabularyError(f"synonyms has {len(self.synonyms)} entries for {c} classes")
        if self.colors.shape != (c, 3) or self.colors.dtype != np.uint8:
            raise VocabularyError(f"colors must be [{c},3] uint8, got {self.colors.shape} {self.colors.dtype}")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != c or self.embeddings.dtype != np.float32:
            raise VocabularyError(
                f"embeddings must be [{c},D] float32, got {self.embeddings.shape} {self.embeddings.dtype}"
            )
        norms = np.linalg.norm(self.embeddings, axis=1)
        if not np.all(np.isfinite(norms)) or np.max(np.abs(norms - 1.0)) > 1e-3:
            raise VocabularyError(f"embeddings rows must be finite and unit-norm (norms {norms.min():.4f}..{norms.max():.4f})")

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and ``<stem>.embeddings.npy`` beside it, each atomically; returns ``path``."""
        path = Path(path)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.embeddings), allow_pickle=False)
        npy = buf.getvalue()
        emb_path = _embeddings_path(path)
        meta = {
            "format_version": VOCABULARY_FORMAT_VERSION,
            "encoder": self.encoder,
            "class_names": list(self.class_names),
            "synonyms": [list(s) for s in self.synonyms],
            "colors": self.colors.astype(int).tolist(),
            "templates": list(self.templates),
            "embeddings_file": emb_path.name,
            "embeddings_shape": list(self.embeddings.shape),
            "embeddings_sha256": hashlib.sha256(npy).hexdigest(),
        }
        atomic_write_bytes(emb_path, npy)
        atomic_write_bytes(path, (json.dumps(meta, indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise VocabularyError(f"{path}: vocabulary file not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise VocabularyError(f"{path}: top level must be a JSON object")
        required = ("format_version", "encoder", "class_names", "synonyms", "colors", "templates",
                    "embeddings_file", "embeddings_shape", "embeddings_sha256")
        for key in required:
            if key not in meta:
                raise VocabularyError(f"{path}: field {key!r} is missing")
        if meta["format_version"] != VOCABULARY_FORMAT_VERSION:
            raise VocabularyError(
                f"{path}: field 'format_version' is {meta['format_version']!r}; this relidar reads {VOCABULARY_FORMAT_VERSION}"
            )
        emb_path = path.with_name(str(meta["embeddings_file"]))
        try:
            npy = emb_path.read_bytes()
        except FileNotFoundError as exc:
            raise VocabularyError(f"{emb_path}: embeddings file named by {path} (field 'embeddings_file') not found") from exc
        if hashlib.sha256(npy).hexdigest() != meta["embeddings_sha256"]:
            raise VocabularyError(f"{emb_path}: contents do not match field 'embeddings_sha256' of {path} (file changed or truncated)")
        try:
            embeddings = np.load(io.BytesIO(npy), allow_pickle=False)
        except ValueError as exc:
            raise VocabularyError(f"{emb_path}: not a valid .npy array ({exc})") from exc
        if list(embeddings.shape) != list(meta["embeddings_shape"]):
            raise VocabularyError(f"{emb_path}: shape {embeddings.shape} differs from field 'embeddings_shape' "
                                  f"{meta['embeddings_shape']} in {path}")
        try:
            colors = np.asarray(meta["colors"], dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise VocabularyError(f"{path}: field 'colors' must be a list of [r,g,b] integers") from exc
        if colors.ndim != 2 or colors.shape[1:] != (3,) or colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise VocabularyError(f"{path}: field 'colors' must be [C,3] integers in 0..255")
        try:
            return cls(
                class_names=tuple(str(n) for n in meta["class_names"]),
                synonyms=tuple(tuple(str(w) for w in syn) for syn in meta["synonyms"]),
                colors=colors.astype(np.uint8),
                embeddings=embeddings,
                templates=tuple(str(t) for t in meta["templates"]),
                encoder=str(meta["encoder"]),
            )
        except VocabularyError as exc:
            raise VocabularyError(f"{path}: {exc}") from exc

    def subset(self, names: Sequence[str]) -> "Vocabulary":
        """The named classes, in the given order."""
        index = {n: i for i, n in enumerate(self.class_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise VocabularyError(f"class_names: {missing} not in vocabulary {list(self.class_names)}")
        rows = [index[n] for n in names]
        return Vocabulary(
            class_names=tuple(names),
            synonyms=tuple(self.synonyms[i] for i in rows),
            colors=self.colors[rows],
            embeddings=self.embeddings[rows],
            templates=self.templates,
            encoder=self.encoder,
        )
