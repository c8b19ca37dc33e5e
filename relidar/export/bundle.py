"""The bundle writer: student ONNX + head + (optional) weights, text encoder, vocabulary, manifest.

:func:`write_bundle` is the one place a bundle is made (``relidar export bundle``, the demo, tests).
See ``relidar.core.bundle`` for the layout.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch

import relidar
from relidar.core.bundle import (
    BUNDLE_FORMAT_VERSION,
    HEAD,
    MANIFEST,
    STUDENT_ONNX,
    STUDENT_WEIGHTS,
    VOCABULARY,
    BundleError,
    Manifest,
    StudentSpec,
    TextEncoderSpec,
    file_entry,
    write_manifest,
)
from relidar.core.graph import OUTPUTS, input_names
from relidar.core.text.simulated import SimulatedTextEncoder
from relidar.core.vocabulary import Vocabulary
from relidar.export.onnx_student import DEFAULT_OPSET, example_feed, export_student_onnx
from relidar.model.deployed import DEFAULT_LOGIT_SCALE, head_arrays
from relidar.model.network import Student, StudentConfig

TEXT_DIR = "text"


@dataclass(frozen=True)
class ClipTextExport:
    """An open_clip model whose text tower goes into the bundle (ONNX + the BPE vocabulary file)."""

    model: Any
    name: str = ""
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


def _write_text_encoder(stage: Path, encoder: TextEncoderExport, opset: int) -> TextEncoderSpec:
    (stage / TEXT_DIR).mkdir()
    if isinstance(encoder, SimulatedTextEncoder):
        table = f"{TEXT_DIR}/simulated.json"
        encoder.save(stage / table)
        return TextEncoderSpec(kind="simulated", feature_dim=encoder.feature_dim, name=encoder.key, table=table)
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
    return TextEncoderSpec(kind="clip", feature_dim=embed_dim(encoder.model), name=encoder.name, onnx=onnx_name,
                           bpe=bpe, context_length=ctx)


def write_bundle(out_dir: str | Path, student: Student, vocabulary: Vocabulary, text_encoder: TextEncoderExport,
                 *, logit_scale: float = DEFAULT_LOGIT_SCALE, opset: int = DEFAULT_OPSET,
                 trace_points: np.ndarray | None = None, include_weights: bool = True) -> Path:
    """Export everything into ``out_dir`` (created; replaced if it already holds a bundle) and return it.

    ``student`` is traced in eval mode with BatchNorm folded; ``trace_points`` [N, >=3] (a real scan
    is best) defaults to :func:`example_points`. The bundle is staged in a sibling folder and moved
    into place at the end, so a crash never leaves a half-written bundle behind.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError(f"{out}: exists, is not empty and is not a bundle; choose a new --out folder")
    cfg = student.config
    if vocabulary.feature_dim != cfg.out_dim:
        raise BundleError(f"vocabulary embeddings are {vocabulary.feature_dim}-d but the student's out_dim is "
                          f"{cfg.out_dim}; build the vocabulary with the student's teacher")
    if isinstance(text_encoder, SimulatedTextEncoder) and text_encoder.feature_dim != cfg.out_dim:
        raise BundleError(f"the simulated text encoder is {text_encoder.feature_dim}-d but the student's out_dim is "
                          f"{cfg.out_dim}")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        student = student.eval()
        points = trace_points if trace_points is not None else example_points(cfg)
        feed = example_feed(student, points, vocabulary.embeddings)
        export_student_onnx(student, stage / STUDENT_ONNX, feed, logit_scale, opset)
        np.savez(stage / HEAD, **head_arrays(student))
        if include_weights:
            from relidar.model.weights import save_student

            save_student(student, stage / STUDENT_WEIGHTS)
        vocabulary.save(stage / VOCABULARY)
        text_spec = _write_text_encoder(stage, text_encoder, opset)
        if text_spec.feature_dim != cfg.out_dim:
            raise BundleError(f"the text encoder is {text_spec.feature_dim}-d but the student's out_dim is {cfg.out_dim}")
        files = {p.relative_to(stage).as_posix(): file_entry(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        manifest = Manifest(
            format_version=BUNDLE_FORMAT_VERSION,
            relidar_version=relidar.__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            student=StudentSpec(profile=cfg.profile, voxel_size=cfg.voxel_size, crop_min=cfg.crop_min,
                                crop_max=cfg.crop_max, input_features=tuple(cfg.input_features),
                                num_levels=cfg.num_levels, backbone_dim=student.backbone.out_channels,
                                out_dim=cfg.out_dim, weights=STUDENT_WEIGHTS if include_weights else None,
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


def load_checkpoint_student(checkpoint: str | Path) -> Student:
    """A Student from a distillation checkpoint (safetensors with its config in the metadata)."""
    from relidar.core.backends.base import BackendError
    from relidar.model.torch_backend import load_student

    try:
        return load_student(checkpoint)
    except BackendError as exc:
        raise BundleError(str(exc)) from exc


def manifest_summary(root: Path) -> dict[str, Any]:
    """Key facts of a bundle for a CLI table."""
    m = json.loads((Path(root) / MANIFEST).read_text())
    return {"profile": m["student"]["profile"], "voxel_size": m["student"]["voxel_size"],
            "out_dim": m["student"]["out_dim"], "text_encoder": m["text_encoder"]["kind"],
            "files": len(m["files"]), "bytes": sum(f["size"] for f in m["files"].values())}


def text_encoder_for(vocabulary: Vocabulary, clip_model: str | None = None,
                     clip_pretrained: str | None = None,
                     simulated: "Callable[[int, int], SimulatedTextEncoder] | None" = None) -> TextEncoderExport:
    """The text encoder that made ``vocabulary`` (from its ``encoder`` field), ready to go into a bundle.

    ``synthetic-vlm-d<D>-p<P>-s<seed>`` (and its version-2 teachers, ``...-v2.<hash>``, which share the text
    side) -> the simulated encoder; ``maskclip/<model>/<pretrained>/<size>``
    -> that open_clip model's text tower (weights from open_clip's cache or download). ``clip_model`` /
    ``clip_pretrained`` override the parsed names (e.g. a local checkpoint path).
    """
    import re

    name = vocabulary.encoder
    sim = re.fullmatch(r"synthetic-vlm-d(\d+)-p\d+-s(\d+)(?:-v2\.[0-9a-f]+)?", name)
    if sim and clip_model is None:
        if simulated is None:
            raise BundleError(f"vocabulary encoder {name!r} is the synthetic world's simulated encoder; "
                              "pass the factory that builds it (relidar.training.synthetic.teacher.synthetic_text_encoder)")
        return simulated(int(sim.group(1)), int(sim.group(2)))
    parts = name.split("/")
    if clip_model is None and (len(parts) < 3 or parts[0] != "maskclip"):
        raise BundleError(f"vocabulary encoder {name!r}: cannot tell which text tower made it; pass --clip-model "
                          "and --clip-pretrained")
    model_name = clip_model or parts[1]
    pretrained = clip_pretrained if clip_pretrained is not None else parts[2]
    import open_clip

    try:
        model = open_clip.create_model(model_name, pretrained=None if pretrained in ("", "random", "none") else pretrained)
    except RuntimeError as exc:
        raise BundleError(f"open_clip model {model_name!r} with pretrained={pretrained!r} cannot be built: {exc}") from exc
    return ClipTextExport(model=model.eval(), name=f"{model_name}/{pretrained}")
