"""The bundle writer: student ONNX + head + (optional) weights, text encoder, vocabulary, manifest.

:func:`write_bundle` is the one place a bundle is made (``relidar export bundle``, the demo, tests).
See ``relidar.core.bundle`` for the layout.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch

import relidar
from relidar.core.artifact import file_entry
from relidar.core.bundle import (
    BUNDLE_FORMAT_VERSION,
    HEAD,
    MANIFEST,
    STUDENT_ONNX,
    STUDENT_TABLE_ONNX,
    STUDENT_WEIGHTS,
    VOCABULARY,
    BundleError,
    BundleTextEncoder,
    Manifest,
    StudentSpec,
    write_manifest,
)
from relidar.core.graph import OUTPUTS, input_names
from relidar.core.text.simulated import SimulatedTextEncoder
from relidar.core.text.spec import RANDOM_WEIGHTS, ClipTextSpec, SimulatedTextSpec
from relidar.core.vocabulary import Vocabulary
from relidar.export.onnx_student import DEFAULT_OPSET, example_feed, export_student_onnx
from relidar.model.deployed import DEFAULT_LOGIT_SCALE, head_arrays
from relidar.model.network import Student, StudentConfig

TEXT_DIR = "text"


@dataclass(frozen=True)
class ClipTextExport:
    """An open_clip model whose text tower goes into the bundle (ONNX + the BPE vocabulary file); ``spec``
    says which model and weights it is (recorded in the manifest)."""

    model: Any
    spec: ClipTextSpec
    bpe_path: str | Path | None = None  # default: the file open_clip ships


TextEncoderExport = Union[ClipTextExport, SimulatedTextEncoder]


def example_points(config: StudentConfig, n: int = 6000, seed: int = 0) -> np.ndarray:
    """A compact random cloud inside the crop, dense enough that every kernel offset at every level has
    pairs (what tracing should see); [n, 4] float32."""
    rng = np.random.default_rng(seed)
    lo = np.asarray(config.crop_min)
    hi = np.asarray(config.crop_max)
    centre = (lo + hi) / 2
    extent = np.minimum(hi - lo, config.voxel_size * 2 ** (config.num_levels + 2))
    xyz = centre + (rng.random((n, 3)) - 0.5) * extent
    return np.concatenate([xyz, rng.random((n, 1))], axis=1).astype(np.float32)


def _versions() -> dict[str, str]:
    import onnx

    out = {"torch": torch.__version__, "onnx": onnx.__version__, "numpy": np.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import open_clip

        out["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return out


def _write_text_encoder(stage: Path, encoder: TextEncoderExport, opset: int) -> BundleTextEncoder:
    (stage / TEXT_DIR).mkdir()
    if isinstance(encoder, SimulatedTextEncoder):
        table = f"{TEXT_DIR}/simulated.json"
        encoder.save(stage / table)
        return BundleTextEncoder(spec=encoder.spec, table=table)
    from relidar.core.text.tokenizer import BPE_FILE_NAME, ClipTokenizer
    from relidar.export.onnx_text import context_length, embed_dim, export_text_onnx

    bpe_src = Path(encoder.bpe_path) if encoder.bpe_path else None
    if bpe_src is None:
        from open_clip.tokenizer import default_bpe

        bpe_src = Path(default_bpe())
    bpe = f"{TEXT_DIR}/{BPE_FILE_NAME}"
    shutil.copyfile(bpe_src, stage / bpe)
    ctx = context_length(encoder.model)
    tokens = ClipTokenizer(stage / bpe, ctx)(["a photo of a car.", "a street scene with a pedestrian."])
    onnx_name = f"{TEXT_DIR}/text_encoder.onnx"
    export_text_onnx(encoder.model, stage / onnx_name, tokens, opset)
    if embed_dim(encoder.model) != encoder.spec.feature_dim:
        raise BundleError(f"the open_clip model embeds into {embed_dim(encoder.model)} dimensions but its spec says "
                          f"{encoder.spec.feature_dim}", field="text_encoder.spec.feature_dim")
    return BundleTextEncoder(spec=encoder.spec, onnx=onnx_name, bpe=bpe, context_length=ctx)


def write_bundle(out_dir: str | Path, student: Student, vocabulary: Vocabulary, text_encoder: TextEncoderExport,
                 *, logit_scale: float = DEFAULT_LOGIT_SCALE, opset: int = DEFAULT_OPSET,
                 trace_points: np.ndarray | None = None, include_weights: bool = True,
                 table_graph: bool = True) -> Path:
    """Export everything into ``out_dir`` (created; replaced if it already holds a bundle) and return it.

    ``student`` is traced in eval mode with BatchNorm folded; ``trace_points`` [N, >=3] (a real scan
    is best) defaults to :func:`example_points`. ``table_graph`` adds the neighbour-table formulation of
    the same graph, which GPU backends run (relidar.core.graph.resolve_formulation). The bundle is staged
    in a sibling folder and moved into place at the end, so a crash never leaves a half-written bundle behind.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError("exists, is not empty and is not a bundle", path=out, hint="choose a new --out folder")
    cfg = student.config
    if vocabulary.feature_dim != cfg.out_dim:
        raise BundleError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the student's out_dim is "
                          f"{cfg.out_dim}", hint="build the vocabulary with the student's teacher")
    if text_encoder.spec.feature_dim != cfg.out_dim:
        raise BundleError(f"the text encoder is {text_encoder.spec.feature_dim}-d but the student's out_dim is "
                          f"{cfg.out_dim}", hint="ship the text tower of the teacher the student was distilled from")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    # mkdtemp makes the folder 0700; a bundle is read by other users and containers with other uids.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    try:
        student = student.eval()
        points = trace_points if trace_points is not None else example_points(cfg)
        feed = example_feed(student, points, vocabulary.embeddings)
        export_student_onnx(student, stage / STUDENT_ONNX, feed, logit_scale, opset)
        if table_graph:
            export_student_onnx(student, stage / STUDENT_TABLE_ONNX, feed, logit_scale, opset, formulation="table")
        np.savez(stage / HEAD, **head_arrays(student))
        if include_weights:
            from relidar.model.weights import save_student

            save_student(student, stage / STUDENT_WEIGHTS)
        vocabulary.save(stage / VOCABULARY)
        text_spec = _write_text_encoder(stage, text_encoder, opset)
        files = {p.relative_to(stage).as_posix(): file_entry(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        manifest = Manifest(
            format_version=BUNDLE_FORMAT_VERSION,
            relidar_version=relidar.__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            student=StudentSpec(profile=cfg.profile, voxel_size=cfg.voxel_size, crop_min=cfg.crop_min,
                                crop_max=cfg.crop_max, input_features=tuple(cfg.input_features),
                                num_levels=cfg.num_levels, backbone_dim=student.backbone.out_channels,
                                out_dim=cfg.out_dim, weights=STUDENT_WEIGHTS if include_weights else None,
                                table_onnx=STUDENT_TABLE_ONNX if table_graph else None,
                                inputs=tuple(input_names(cfg.num_levels)), outputs=OUTPUTS, opset=opset),
            logit_scale=logit_scale,
            text_encoder=text_spec,
            versions=_versions(),
            files=files,
        )
        write_manifest(stage, manifest)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """Key facts of a bundle for a CLI table."""
    return {"profile": manifest.student.profile, "voxel_size": manifest.student.voxel_size,
            "out_dim": manifest.student.out_dim, "text_encoder": manifest.text_encoder.spec.describe(),
            "files": len(manifest.files), "bytes": sum(f.size for f in manifest.files.values())}


def text_encoder_for(vocabulary: Vocabulary, clip_model: str | None = None, clip_pretrained: str | None = None,
                     simulated: Callable[[SimulatedTextSpec], SimulatedTextEncoder] | None = None) -> TextEncoderExport:
    """The text encoder that made ``vocabulary`` (its typed ``encoder`` spec), ready to go into a bundle.

    A simulated spec is rebuilt by ``simulated`` (the synthetic world's factory, which lives in the
    training layer); a CLIP spec by open_clip (weights from its cache or a download). ``clip_model`` /
    ``clip_pretrained`` override the vocabulary's CLIP model and weights (e.g. a local checkpoint path),
    and name the tower for a vocabulary whose encoder relidar cannot rebuild (kind ``named``).
    """
    spec = vocabulary.encoder
    if clip_model is not None or clip_pretrained is not None:
        base = spec if isinstance(spec, ClipTextSpec) else None
        model_name = clip_model or (base.model if base else None)
        if model_name is None:
            raise BundleError("--clip-pretrained needs --clip-model: the vocabulary's encoder is not a CLIP model",
                              field="clip_model", hint="pass --clip-model too")
        pretrained = clip_pretrained if clip_pretrained is not None else (base.pretrained if base else RANDOM_WEIGHTS)
        spec = ClipTextSpec(model=model_name, pretrained=pretrained, feature_dim=vocabulary.feature_dim)
    if isinstance(spec, SimulatedTextSpec):
        if simulated is None:
            raise BundleError("the vocabulary's encoder is the synthetic world's simulated one; pass the factory that "
                              "builds it (relidar.training.text_embeddings.simulated_text_encoder)", field="encoder")
        return simulated(spec)
    if not isinstance(spec, ClipTextSpec):
        raise BundleError(f"the vocabulary's encoder ({spec.describe()}) cannot be rebuilt by name", field="encoder",
                          hint="pass --clip-model and --clip-pretrained")
    import open_clip

    weights = None if spec.pretrained.lower() in ("", "random", RANDOM_WEIGHTS) else spec.pretrained
    try:
        model = open_clip.create_model(spec.model, pretrained=weights)
    except RuntimeError as exc:
        raise BundleError(f"open_clip model {spec.model!r} with pretrained={spec.pretrained!r} cannot be built: {exc}",
                          field="encoder", hint="check --clip-model / --clip-pretrained") from exc
    return ClipTextExport(model=model.eval(), spec=spec)
