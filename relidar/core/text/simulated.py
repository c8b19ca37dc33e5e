"""The synthetic world's text encoder: prompts -> concept embeddings + a deterministic per-prompt jitter.

numpy only, so a model bundle can carry it as data (a concept table) and the node can encode new
prompts with no PyTorch. A prompt is matched to the concept whose longest name/word occurs in it
as a whole word (case and punctuation ignored); it gets that concept's embedding plus
``text_jitter`` times a unit vector hashed from the prompt (templates move an embedding a little, as
with CLIP), then L2-normalised. A prompt naming no concept gets a hashed random direction.
Every direction is ``unit_from(key)``: a standard normal vector seeded by the key's blake2b hash.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from relidar.core.artifact import read_manifest, sha256_bytes, write_json
from relidar.core.atomic import atomic_write_bytes
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.core.text.spec import SimulatedTextSpec

SIMULATED_FORMAT_VERSION = 2


class SimulatedEncoderError(RelidarError, ValueError):
    """A simulated text encoder's files or parameters are invalid; the message names the file/field."""


def unit_from(key: str, dim: int) -> np.ndarray:
    """A unit float64 vector [dim] that depends only on ``key``."""
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32."""
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class ConceptText:
    """A concept's name, its confusability group and the words prompts may name it by."""

    name: str
    group: str
    words: tuple[str, ...]


def concept_embeddings(concepts: Sequence[ConceptText], feature_dim: int, key: str, group_weight: float) -> np.ndarray:
    """[K, D] float32 unit rows: sqrt(w) * group direction + sqrt(1-w) * own direction, normalised.
    Concepts of one group share ``group_weight`` of their direction, so they are confusable."""
    a, b = np.sqrt(group_weight), np.sqrt(1.0 - group_weight)
    groups = {c.group: unit_from(f"{key}/group/{c.group}", feature_dim) for c in concepts}
    return normalise(np.stack([a * groups[c.group] + b * unit_from(f"{key}/concept/{c.name}", feature_dim)
                               for c in concepts]))


class _TableConcept(StrictModel):
    name: str
    words: tuple[str, ...]


class _Table(StrictModel):
    """``<name>.json`` of a saved simulated encoder; the concept embeddings are ``<name>.npy`` beside it."""

    format_version: int
    spec: SimulatedTextSpec
    embeddings_file: str
    embeddings_sha256: str
    concepts: tuple[_TableConcept, ...]


class SimulatedTextEncoder:
    """Implements the text-encoder interface (``feature_dim``, ``encode_text``); ``spec`` says which one it is."""

    kind = "simulated"

    def __init__(self, names: Sequence[str], words: Sequence[Sequence[str]], embeddings: np.ndarray,
                 spec: SimulatedTextSpec) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(names) or len(words) != len(names):
            raise SimulatedEncoderError(
                f"embeddings {emb.shape} must be [K, D] with K = {len(names)} concept names and word lists",
                field="embeddings")
        if emb.shape[1] != spec.feature_dim:
            raise SimulatedEncoderError(f"embeddings are {emb.shape[1]}-d but the spec says {spec.feature_dim}",
                                        field="spec.feature_dim")
        self.names = tuple(names)
        self.words = tuple(tuple(w) for w in words)
        self.embeddings = emb
        self.spec = spec
        self.key = f"synthetic-vlm/{spec.seed}"
        self.text_jitter = float(spec.text_jitter)
        # Longest words first, so "person riding a bicycle" wins over "person"; ties alphabetically.
        pairs = {(w, k) for k, ws in enumerate(self.words) for w in ws}
        self._lookup = sorted(pairs, key=lambda wk: (-len(wk[0]), wk[0], wk[1]))

    @classmethod
    def from_concepts(cls, concepts: Sequence[ConceptText], feature_dim: int, seed: int, group_weight: float,
                      text_jitter: float) -> "SimulatedTextEncoder":
        """The encoder of the simulated teacher with this seed (key ``synthetic-vlm/<seed>``)."""
        spec = SimulatedTextSpec(feature_dim=feature_dim, seed=seed, group_weight=group_weight, text_jitter=text_jitter)
        key = f"synthetic-vlm/{seed}"
        words = [(c.name.replace("-", " "),) + tuple(c.words) for c in concepts]
        return cls([c.name for c in concepts], words, concept_embeddings(concepts, feature_dim, key, group_weight), spec)

    @property
    def feature_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def concept_of(self, prompt: str) -> int | None:
        """Index of the concept a prompt names, or None."""
        text = " " + re.sub(r"[^a-z0-9 ]+", " ", prompt.lower().replace("-", " ").replace("_", " ")) + " "
        text = re.sub(r"\s+", " ", text)
        for word, k in self._lookup:
            if f" {word} " in text:
                return k
        return None

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32 unit rows."""
        d = self.feature_dim
        rows = []
        for prompt in prompts:
            k = self.concept_of(prompt)
            if k is None:
                rows.append(unit_from(f"{self.key}/unknown/{prompt}", d))
            else:
                rows.append(self.embeddings[k] + self.text_jitter * unit_from(f"{self.key}/prompt/{prompt}", d))
        return normalise(np.stack(rows)) if rows else np.zeros((0, d), np.float32)

    # -- on disk: <name>.json (table) + <name>.npy (concept embeddings) ---------------------------
    def save(self, json_path: str | Path) -> list[Path]:
        """Write the table and the embeddings beside it, each atomically; returns both paths."""
        json_path = Path(json_path)
        npy_path = json_path.with_suffix(".npy")
        buf = io.BytesIO()
        np.save(buf, self.embeddings, allow_pickle=False)
        atomic_write_bytes(npy_path, buf.getvalue())
        write_json(json_path, _Table(format_version=SIMULATED_FORMAT_VERSION, spec=self.spec,
                                     embeddings_file=npy_path.name, embeddings_sha256=sha256_bytes(buf.getvalue()),
                                     concepts=tuple(_TableConcept(name=n, words=w) for n, w in zip(self.names, self.words))))
        return [json_path, npy_path]

    @classmethod
    def load(cls, json_path: str | Path) -> "SimulatedTextEncoder":
        json_path = Path(json_path)
        fix = "re-export the bundle (relidar export bundle)"
        table = read_manifest(json_path, _Table, SimulatedEncoderError, version=SIMULATED_FORMAT_VERSION,
                              what="simulated text encoder table", missing_hint=fix, hint=fix)
        npy_path = json_path.with_name(table.embeddings_file)
        try:
            data = npy_path.read_bytes()
        except FileNotFoundError as exc:
            raise SimulatedEncoderError(f"embeddings file named by {json_path.name} not found", path=npy_path,
                                        hint=fix) from exc
        if sha256_bytes(data) != table.embeddings_sha256:
            raise SimulatedEncoderError(f"contents differ from field 'embeddings_sha256' of {json_path.name}",
                                        path=npy_path, hint=fix)
        emb = np.load(io.BytesIO(data), allow_pickle=False)
        return cls([c.name for c in table.concepts], [c.words for c in table.concepts], emb, table.spec)
