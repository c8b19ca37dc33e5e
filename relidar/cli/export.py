"""``relidar export onnx | bundle | tensorrt``: the student (and text tower) to ONNX, model bundles,
TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.export.command("onnx")(export_onnx)
    apps.export.command("bundle")(export_bundle)
    apps.export.command("tensorrt")(export_tensorrt_command)


def export_onnx(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Student weights (.safetensors from `relidar distill`)."),
    out: Path = typer.Option(Path("student.onnx"), "--out", help="ONNX file to write."),
    scan: Optional[Path] = typer.Option(None, "--scan", help="Scan to trace with (.bin/.npy/.pcd/.ply); default: a "
                                        "random cloud. Sizes stay symbolic either way."),
    logit_scale: float = typer.Option(100.0, "--logit-scale", min=1e-3, help="Scores are softmax(scale * cosine)."),
    opset: int = typer.Option(17, "--opset", min=17, help="ONNX opset (TensorRT 10 parses 9..20+)."),
    formulation: str = typer.Option("pairs", "--formulation", help="Kernel maps as 'pairs' (CPU runtimes) or 'table' "
                                                                   "(neighbour tables: GPU runtimes)."),
) -> None:
    """Export the student alone to ONNX (BatchNorm folded; voxel features + kernel maps + text embeddings in,
    per-point labels and scores out). A bundle (`relidar export bundle`) is what the runtime loads."""
    import numpy as np
    from rich.console import Console

    from relidar.core.scan_io import read_scan
    from relidar.export.bundle import example_points
    from relidar.export.onnx_student import example_feed, export_student_onnx
    from relidar.model.weights import load_student

    console = Console()
    if formulation not in ("pairs", "table"):
        from relidar.core.errors import RelidarError

        raise RelidarError(f"{formulation!r}: choose pairs or table", field="--formulation")
    student = load_student(checkpoint).eval()
    points = read_scan(scan) if scan is not None else example_points(student.config)
    d = student.config.out_dim
    text = np.eye(2, d, dtype=np.float32)  # any unit rows: the class count is symbolic
    path = export_student_onnx(student, out, example_feed(student, points, text), logit_scale, opset,
                               formulation=formulation)  # type: ignore[arg-type]
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def export_bundle(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Student weights (.safetensors from `relidar distill`)."),
    vocabulary: Path = typer.Option(..., "--vocabulary", help="Vocabulary JSON (classes, prompts, colours, embeddings) from "
                                                              "`relidar vocabulary build`, made with the distilled teacher."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (replaced if it already holds a bundle)."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip model of the text tower (default: "
                                             "read from the vocabulary's encoder field)."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip pretrained tag or "
                                                  "checkpoint path for --clip-model."),
    scan: Optional[Path] = typer.Option(None, "--trace-scan", help="Scan to trace the student with (default: random)."),
    logit_scale: float = typer.Option(100.0, "--logit-scale", min=1e-3, help="Scores are softmax(scale * cosine)."),
    no_weights: bool = typer.Option(False, "--no-weights", help="Do not ship student.safetensors (no torch backend)."),
) -> None:
    """Write a model bundle: student ONNX, head, text encoder (ONNX + tokenizer, or the simulated table),
    vocabulary and a manifest with versions, preprocessing parameters and the sha256 of every file."""
    from rich.console import Console
    from rich.table import Table

    from relidar.core.bundle import load_bundle
    from relidar.core.scan_io import read_scan
    from relidar.core.vocabulary import Vocabulary
    from relidar.export.bundle import manifest_summary, text_encoder_for, write_bundle
    from relidar.model.weights import load_student
    from relidar.training.text_embeddings import simulated_text_encoder

    console = Console()
    student = load_student(checkpoint).eval()
    vocab = Vocabulary.load(vocabulary)
    encoder = text_encoder_for(vocab, clip_model, clip_pretrained, simulated=simulated_text_encoder)
    points = read_scan(scan) if scan is not None else None
    with console.status("exporting (tracing the student takes a while)"):
        root = write_bundle(out, student, vocab, encoder, logit_scale=logit_scale, trace_points=points,
                            include_weights=not no_weights)
    written = load_bundle(root)
    table = Table(title=f"bundle {root}")
    table.add_column("field")
    table.add_column("value")
    for key, value in manifest_summary(written.manifest).items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"wrote {root} (model bundle)", highlight=False, soft_wrap=True)


def export_tensorrt_command(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle folder (`relidar export bundle`)."),
    fp16: bool = typer.Option(False, "--fp16", help="Build in FP16 (default FP32)."),
    max_points: int = typer.Option(300_000, "--max-points", min=1, help="Largest scan the engine must take."),
    opt_points: int = typer.Option(120_000, "--opt-points", min=1, help="Scan size TensorRT tunes for."),
    scan: Optional[Path] = typer.Option(None, "--scan", help="A typical scan: its occupancy sets the tuned shapes "
                                        "and the parity check runs on it."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even if an engine for this GPU/TensorRT exists."),
) -> None:
    """Build a TensorRT engine from the bundle's ONNX for this GPU, cache it in the bundle
    (engines/<gpu>_<trt>_<precision>.plan) and check parity against ONNX Runtime."""
    from rich.console import Console

    from relidar.core.scan_io import read_scan
    from relidar.export.tensorrt import export_tensorrt, tensorrt_parity

    console = Console()
    points = read_scan(scan) if scan is not None else None
    with console.status("building the TensorRT engine"):
        path, built = export_tensorrt(bundle, fp16, max_points, min(opt_points, max_points), points, rebuild=rebuild)
    console.print(f"{'built' if built else 'cached'}: {path}")
    if points is not None:
        report = tensorrt_parity(bundle, points, fp16)
        ok = report.ok() if not fp16 else report.label_agreement >= 0.99
        colour = "green" if ok else "red"
        console.print(f"[{colour}]parity vs ONNX Runtime: max |feature diff| {report.max_abs_feature:.2e}, "
                      f"labels identical {100 * report.label_agreement:.3f} %[/{colour}]")
        if not ok:
            raise typer.Exit(1)
