"""The model bundle: one self-describing folder the node, the CLI and the benchmarks run from.

Layout (file names are fixed; the manifest lists each with its sha256 and size)::

    DIR/manifest.json            this file's schema: :class:`Manifest`
    DIR/student.onnx             the student graph (see relidar.export.onnx_student), kernel maps as pair lists
    DIR/student_table.onnx       (optional) the same graph with neighbour tables: the GPU formulation
    DIR/head.npz                 the projection head (weight [Cb, D], bias [D]) for per-point features
    DIR/vocabulary.json          classes, prompts, colours (relidar.core.vocabulary) ...
    DIR/vocabulary.embeddings.npy   ... and their text embeddings [C, D]
    DIR/text/...                 the text encoder: CLIP (text_encoder.onnx + bpe_simple_vocab_16e6.txt.gz)
                                 or simulated (simulated.json + simulated.npy)
    DIR/student.safetensors      (optional) BN-folded weights, for the torch backend
    DIR/engines/<gpu>_<trt>_<precision>_<formulation>_<max>-<opt points>.plan   TensorRT engines, added by
                                 ``relidar export tensorrt``

Loading (:func:`load_bundle`) checks the format version, that every listed file exists with the
listed size and sha256, that the manifest's preprocessing values are those every student graph
(``student.onnx``, ``student_table.onnx``) was exported with (stored in their metadata,
``relidar.core.contract``) and those of the weights' stored student config, and that the parts fit
together (vocabulary dim = student out_dim = text encoder dim, head shape); any failure is a
:class:`BundleError` naming the file and what to do.
numpy only: no PyTorch, no onnx package. The writer is ``relidar.export.bundle``; checksums, the
version check and the manifest I/O are ``relidar.core.artifact``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field

from relidar.core import artifact
from relidar.core.artifact import FileEntry, file_entry
from relidar.core.config import StrictModel
from relidar.core.errors import RelidarError
from relidar.core.text.spec import ClipTextSpec, SimulatedTextSpec

BUNDLE_FORMAT = "relidar-bundle"
BUNDLE_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
STUDENT_ONNX = "student.onnx"
STUDENT_TABLE_ONNX = "student_table.onnx"
HEAD = "head.npz"
VOCABULARY = "vocabulary.json"
STUDENT_WEIGHTS = "student.safetensors"
ENGINES_DIR = "engines"

REEXPORT = "re-export it with `relidar export bundle`"
RECOPY = "re-copy or re-export the bundle"

__all__ = ["Bundle", "BundleError", "FileEntry", "Manifest", "file_entry", "load_bundle", "write_manifest"]


class BundleError(RelidarError, RuntimeError):
    """A bundle that is missing, corrupt or inconsistent; ``path`` the file at fault, ``hint`` the fix."""


class StudentSpec(StrictModel):
    """What the student graph expects and produces; everything preprocessing needs."""

    profile: str
    voxel_size: float = Field(gt=0)
    crop_min: tuple[float, float, float]
    crop_max: tuple[float, float, float]
    input_features: tuple[str, ...]
    num_levels: int = Field(ge=1)
    backbone_dim: int = Field(ge=1, description="Cb: width of the graph's voxel_features output")
    out_dim: int = Field(ge=1, description="D: the embedding size the head maps into")
    onnx: str = STUDENT_ONNX
    table_onnx: str | None = Field(None, description="the same graph in the neighbour-table formulation (GPU "
                                                     "backends); its inputs are relidar.core.graph.input_names(..., 'table')")
    head: str = HEAD
    weights: str | None = Field(None, description="BN-folded safetensors for the torch backend, if shipped")
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int


class BundleTextEncoder(StrictModel):
    """The text encoder a bundle ships: which one (``spec``) and its files."""

    spec: Annotated[Union[ClipTextSpec, SimulatedTextSpec], Field(discriminator="kind")]
    # clip
    onnx: str | None = None
    bpe: str | None = None
    context_length: int | None = None
    # simulated
    table: str | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim


class EngineSpec(StrictModel):
    file: str
    gpu: str
    tensorrt: str
    precision: Literal["fp32", "fp16"]
    formulation: Literal["pairs", "table"] = "pairs"
    max_points: int | None = Field(None, ge=1, description="the optimisation profile's largest scan")
    opt_points: int | None = Field(None, ge=1, description="the scan size the engine was tuned for")


class Manifest(StrictModel):
    format: Literal["relidar-bundle"] = BUNDLE_FORMAT
    format_version: int
    relidar_version: str
    created: str
    student: StudentSpec
    logit_scale: float = Field(gt=0, description="softmax(logit_scale * cosine); CLIP uses 100")
    text_encoder: BundleTextEncoder
    vocabulary: str = VOCABULARY
    versions: dict[str, str] = Field(default_factory=dict, description="torch, onnx, onnxruntime... used to export")
    engines: list[EngineSpec] = Field(default_factory=list)
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its folder and manifest; paths resolved."""

    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def student_onnx(self) -> Path:
        return self.path(self.manifest.student.onnx)

    @property
    def formulations(self) -> tuple[str, ...]:
        """The kernel-map formulations this bundle has a student graph for (relidar.core.graph)."""
        return ("pairs", "table") if self.manifest.student.table_onnx else ("pairs",)

    def student_onnx_for(self, formulation: str) -> Path:
        """The student graph whose kernel maps come as ``formulation`` ("pairs" or "table")."""
        if formulation == "pairs":
            return self.student_onnx
        if formulation == "table" and self.manifest.student.table_onnx:
            return self.path(self.manifest.student.table_onnx)
        raise BundleError(f"{self.root / MANIFEST}: no student graph in the {formulation!r} formulation (this "
                          f"bundle has {list(self.formulations)}); re-export it with `relidar export bundle`")

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight [Cb, D], bias [D]) float32."""
        with np.load(self.path(self.manifest.student.head), allow_pickle=False) as data:
            return data["weight"].astype(np.float32), data["bias"].astype(np.float32)

    def vocabulary(self):
        from relidar.core.vocabulary import Vocabulary, VocabularyError

        path = self.path(self.manifest.vocabulary)
        try:
            return Vocabulary.load(path)
        except VocabularyError as exc:
            raise BundleError(exc.message, path=exc.path or path, field=exc.field, hint=RECOPY) from exc

    def text_encoder(self):
        """The bundle's text encoder (CLIP through ONNX Runtime, or the simulated one)."""
        spec = self.manifest.text_encoder
        if spec.kind == "clip":
            from relidar.core.text.clip_onnx import ClipOnnxTextEncoder
            from relidar.core.text.tokenizer import TokenizerError

            try:
                return ClipOnnxTextEncoder(self.path(spec.onnx or ""), self.path(spec.bpe or ""),
                                           int(spec.context_length or 77), spec.feature_dim)
            except TokenizerError as exc:
                raise BundleError(exc.message, path=exc.path, field=exc.field, hint=RECOPY) from exc
        from relidar.core.text.simulated import SimulatedEncoderError, SimulatedTextEncoder

        try:
            return SimulatedTextEncoder.load(self.path(spec.table or ""))
        except SimulatedEncoderError as exc:
            raise BundleError(exc.message, path=exc.path, field=exc.field, hint=RECOPY) from exc

    def engine_for(self, gpu: str, tensorrt: str, precision: str, *, formulation: str | None = None,
                   max_points: int | None = None, opt_points: int | None = None) -> EngineSpec | None:
        """The engine built for this GPU, TensorRT version and precision (and, where given, formulation and
        profile sizes); among several, the neighbour-table one with the largest profile."""
        found = [e for e in self.manifest.engines
                 if e.gpu == gpu and e.tensorrt == tensorrt and e.precision == precision
                 and (formulation is None or e.formulation == formulation)
                 and (max_points is None or e.max_points == max_points)
                 and (opt_points is None or e.opt_points == opt_points)]
        if not found:
            return None
        return max(found, key=lambda e: (e.formulation == "table", e.max_points or 0))


def read_manifest(root: Path) -> Manifest:
    """The manifest, typed, with every file name it holds inside ``root`` (``artifact.member_path``)."""
    if not root.is_dir():
        raise BundleError("bundle folder not found", path=root, hint="write one with `relidar export bundle`")
    manifest = artifact.read_manifest(root / MANIFEST, Manifest, BundleError, version=BUNDLE_FORMAT_VERSION,
                                      format_name=BUNDLE_FORMAT, what="model bundle manifest",
                                      missing_hint=f"{root} is not a model bundle; write one with `relidar export "
                                                   "bundle`",
                                      hint=REEXPORT, version_hint=f"written by another relidar version; {REEXPORT}")
    for field, name in [*_named_files(manifest), *(("files", n) for n in manifest.files)]:
        artifact.member_path(root, name, BundleError, manifest=root / MANIFEST, field=field, hint=REEXPORT)
    return manifest


def _named_files(manifest: Manifest) -> list[tuple[str, str]]:
    """(manifest field, file name) of every file the manifest uses."""
    student, spec = manifest.student, manifest.text_encoder
    named = [("student.onnx", student.onnx), ("student.head", student.head), ("vocabulary", manifest.vocabulary),
             ("student.table_onnx", student.table_onnx), ("student.weights", student.weights),
             ("text_encoder.onnx", spec.onnx), ("text_encoder.bpe", spec.bpe), ("text_encoder.table", spec.table)]
    named += [(f"engines[{i}].file", e.file) for i, e in enumerate(manifest.engines)]
    return [(field, name) for field, name in named if name]


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file exists with its size and sha256; every file the manifest names is listed."""
    for _, name in _named_files(manifest):
        if name not in manifest.files:
            raise BundleError(f"{name} is used but not listed (no checksum)", path=root / MANIFEST, field="files",
                              hint=REEXPORT)
    for name, entry in manifest.files.items():
        artifact.verify_file(root / name, entry, BundleError, hint=RECOPY)


def check_consistency(bundle: Bundle) -> None:
    """The parts fit: dims agree across head, vocabulary and text encoder; the vocabulary loads."""
    m = bundle.manifest
    d = m.student.out_dim
    if m.text_encoder.feature_dim != d:
        raise BundleError(f"{m.text_encoder.feature_dim} != student.out_dim {d}: the text encoder is not the teacher "
                          "the student was distilled from", path=bundle.root / MANIFEST,
                          field="text_encoder.spec.feature_dim", hint=REEXPORT)
    head_path = bundle.path(m.student.head)
    try:
        w, b = bundle.head()
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"not a head file with 'weight' and 'bias' ({exc})", path=head_path, hint=RECOPY) from exc
    if w.shape != (m.student.backbone_dim, d) or b.shape != (d,):
        raise BundleError(f"weight {w.shape} / bias {b.shape}, expected ({m.student.backbone_dim}, {d}) / ({d},) "
                          "from the manifest", path=head_path, hint=REEXPORT)
    vocab = bundle.vocabulary()
    if vocab.feature_dim != d:
        raise BundleError(f"embeddings are {vocab.feature_dim}-d but the student's out_dim is {d}",
                          path=bundle.path(m.vocabulary), hint="build the vocabulary with the student's teacher")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read and (by default) verify the bundle at ``root``; raises :class:`BundleError`."""
    root = Path(root)
    manifest = read_manifest(root)
    bundle = Bundle(root=root, manifest=manifest)
    if verify:
        verify_files(root, manifest)
        check_student_contract(bundle)
        check_consistency(bundle)
    return bundle


def check_student_contract(bundle: Bundle) -> None:
    """Every graph and the weights were exported for the manifest's preprocessing values
    (``relidar.core.contract``), each refused naming the file and the field.

    ``student.onnx`` is compared first: a mismatch there means the manifest was edited. The table graph
    (what CUDA and TensorRT run) and ``student.safetensors`` (what the torch backend rebuilds) are then
    compared with the same values: a mismatch there is a file from another export, which would label
    silently wrong on that backend only. The weights are checked here, not in the torch backend, so
    that a bundle is refused (or accepted) whichever backend runs it; their header is JSON, read with
    the stdlib (``relidar.core.contract.read_safetensors_metadata``), no torch."""
    from relidar.core.contract import preprocessing_contract

    m = bundle.manifest
    expected = preprocessing_contract(m.student, m.logit_scale)
    key, stored = _graph_mismatch(bundle.student_onnx, expected)
    if key is not None:
        raise BundleError(f"is {expected.get(key)!r}, but {bundle.student_onnx.name} was exported for "
                          f"{stored.get(key)!r} (its metadata); the manifest was edited", path=bundle.root / MANIFEST,
                          field=key, hint="restore the manifest or re-export the bundle")
    other_export = "it comes from another export than the bundle's student.onnx; " + REEXPORT
    if m.student.table_onnx:
        path = bundle.path(m.student.table_onnx)
        key, stored = _graph_mismatch(path, expected)
        if key is not None:
            raise BundleError(f"was exported for {key} = {stored.get(key)!r}, the manifest says {expected.get(key)!r}",
                              path=path, field=key, hint=other_export)
    if m.student.weights:
        path = bundle.path(m.student.weights)
        key, found, wanted = _weights_mismatch(path, m.student)
        if key is not None:
            raise BundleError(f"its student config has {key} = {found!r}, the manifest says {wanted!r}",
                              path=path, field=key, hint=other_export)


def _graph_mismatch(path: Path, expected: dict) -> tuple[str | None, dict]:
    """The first contract key where the graph at ``path`` differs from ``expected`` (None), and its contract."""
    import json

    from relidar.core.contract import CONTRACT_KEY, contract_mismatch, read_onnx_metadata

    try:
        metadata = read_onnx_metadata(path)
    except RelidarError as exc:
        raise BundleError(exc.message, path=path, hint=exc.hint) from exc
    if CONTRACT_KEY not in metadata:
        raise BundleError(f"carries no preprocessing contract (metadata {CONTRACT_KEY!r}): exported by an older relidar",
                          path=path, hint="re-export the bundle with `relidar export bundle`")
    try:
        stored = json.loads(metadata[CONTRACT_KEY])
    except json.JSONDecodeError as exc:
        raise BundleError(f"metadata {CONTRACT_KEY!r} is not JSON ({exc})", path=path, hint="re-export the bundle") from exc
    return contract_mismatch(stored, expected), stored


def _weights_mismatch(path: Path, student: StudentSpec) -> tuple[str | None, object, object]:
    """The first manifest field (``student.<name>``) the weights' stored student config differs in, with the
    stored and the manifest's values.

    The config holds profile, voxel size, crop, input features and out_dim (relidar.model.network.StudentConfig);
    levels and backbone width follow from the profile."""
    import json

    from relidar.core.contract import WEIGHTS_CONFIG_KEY, contract_mismatch, read_safetensors_metadata

    try:
        config = json.loads(read_safetensors_metadata(path)[WEIGHTS_CONFIG_KEY])
    except RelidarError as exc:
        raise BundleError(exc.message, path=path, hint=exc.hint or RECOPY) from exc
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise BundleError(f"no relidar student config in its header ({exc!r})", path=path,
                          field=WEIGHTS_CONFIG_KEY, hint=REEXPORT) from exc
    if not isinstance(config, dict):
        raise BundleError("its stored student config is not a JSON object", path=path, field=WEIGHTS_CONFIG_KEY,
                          hint=REEXPORT)
    names = ("profile", "voxel_size", "crop_min", "crop_max", "input_features", "out_dim")
    manifest = {f"student.{n}": (list(v) if isinstance(v := getattr(student, n), tuple) else v) for n in names}
    stored = {f"student.{n}": config.get(n) for n in names}
    key = contract_mismatch(stored, manifest)
    return key, stored.get(key or ""), manifest.get(key or "")


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (the files' entries must already be in ``manifest.files``)."""
    return artifact.write_json(root / MANIFEST, manifest)
