"""``relidar prepare``: run the teacher once per frame and write the feature cache distillation reads.

Several processes share a dataset by rank (frame i goes to rank i % W):

    relidar prepare DATA --out CACHE --rank 0 --world-size 2 &
    relidar prepare DATA --out CACHE --rank 1 --world-size 2

or, one process per GPU, with torchrun setting RANK / WORLD_SIZE / LOCAL_RANK:

    torchrun --nproc_per_node=G -m relidar.cli.prepare DATA --out CACHE
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps, single_command_app
from relidar.training.teachers.registry import TeacherKind


def register(apps: Apps) -> None:
    apps.root.command("prepare")(prepare)


def prepare(
    dataset: Path = typer.Argument(..., help="Dataset path (nuScenes root, SemanticKITTI, KITTI object folder or frame, rosbag2); "
                                             "the format is detected."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder; re-running into it resumes (verified frames are skipped)."),
    teacher: TeacherKind = typer.Option(TeacherKind.maskclip, "--teacher", help="maskclip: open_clip ViT with MaskCLIP dense "
                                                                                "features; synthetic: the synthetic world's "
                                                                                "simulated teacher."),
    model: str = typer.Option("ViT-B-16", "--model", help="open_clip model name (maskclip teacher)."),
    pretrained: str = typer.Option("laion2b_s34b_b88k", "--pretrained", help="open_clip pretrained tag or checkpoint path; 'none' "
                                                                             "for random weights (benchmarks)."),
    image_size: int = typer.Option(448, "--image-size", help="Shorter image side in pixels fed to the ViT; the patch grid follows."),
    device: str = typer.Option("auto", "--device", help="'auto' (cuda:LOCAL_RANK, or cuda:rank for ranks started by hand; "
                                                        "GPUs shared when fewer than ranks; else cpu), 'cpu', 'cuda:0'..."),
    rank: Optional[int] = typer.Option(None, "--rank", help="This process's share: frames i with i % world_size == rank (default: "
                                                            "$RANK or 0)."),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="Number of processes sharing the dataset (default: "
                                                                        "$WORLD_SIZE or 1)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N frames of the dataset."),
    superpixels: int = typer.Option(150, "--superpixels", help="SLIC segments per camera image (contrastive pooling)."),
    layout: str = typer.Option("pairs", "--layout", help="pairs: one teacher feature per point-pixel pair; grid: the "
                                                        "cameras' patch grids (the cells pairs read), sampled when read."),
    dtype: str = typer.Option("float16", "--dtype", help="float32, float16, or int8 (one float16 scale per row)."),
    projection_dim: Optional[int] = typer.Option(None, "--projection-dim", help="Keep this many dims of a PCA basis fitted "
                                                                                "on the data (stored with the cache)."),
    projection_frames: int = typer.Option(8, "--projection-frames", help="Frames, spread over the dataset, the PCA basis "
                                                                        "is fitted on."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Reader option key=value (repeatable), e.g. "
                                                                      "sequences=[\"08\"] or lidar_topic=/points."),
) -> None:
    """Run the teacher once per frame and store points, labels, point-pixel pairs with their teacher
    features (per pair or as patch grids, fp32/fp16/int8, optionally PCA-projected) and superpixel ids,
    one checksummed file per frame; report what was done, skipped, failed.
    The class vocabulary for evaluation and export comes from the same teacher's text tower:
    `relidar vocabulary build --teacher <same> --model <same> --pretrained <same>`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from relidar.core.config import validate
    from relidar.core.errors import RelidarError
    from relidar.training.feature_cache import CacheSettings, CacheStorage, prepare_cache
    from relidar.training.readers.base import open_dataset, parse_options

    console = Console()
    rank = rank if rank is not None else int(os.environ.get("RANK", "0"))
    world_size_given = world_size is not None
    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world_size < 1:
        raise RelidarError(f"{world_size}: the number of processes sharing the dataset must be at least 1",
                           field="--world-size" if world_size_given else "WORLD_SIZE", hint="give 1 or more")
    if superpixels < 1:
        raise RelidarError(f"{superpixels}: SLIC needs at least 1 segment per image", field="--superpixels",
                           hint="give 1 or more (default 150)")
    if not 0 <= rank < world_size:
        raise RelidarError(f"{rank} must be in 0..{world_size - 1} (--world-size {world_size})", field="--rank")
    storage = validate(CacheStorage, {"layout": layout, "dtype": dtype, "projection_dim": projection_dim,
                                      "projection_frames": projection_frames}, error=RelidarError, what="storage options")
    reader = open_dataset(dataset, **parse_options(option or []))
    teacher_obj = _build_teacher(teacher, model, pretrained, image_size, device, dataset, console, rank, world_size)
    console.print(f"rank {rank}/{world_size}: {reader!r} -> {out} with teacher {teacher_obj.name} (dim {teacher_obj.feature_dim})")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(f"rank {rank} preparing", total=None)

        def on_frame(done: int, total: int, status: str) -> None:
            progress.update(task, completed=done, total=total, description=f"rank {rank} preparing ({status})")

        report = prepare_cache(
            reader, out, teacher_obj, settings=CacheSettings(superpixel_segments=superpixels, storage=storage),
            rank=rank, world_size=world_size, limit=limit, on_frame=on_frame,
        )
    _print_report(console, report)
    console.print(f"wrote {out} (feature cache; per-rank report in {out / 'reports'})", highlight=False, soft_wrap=True)
    if report.failed:
        # The summary above lists them; a non-zero exit lets scripts and CI notice (rerunning resumes).
        fid, why = report.failed[0]
        raise RelidarError(f"{len(report.failed)} of {report.assigned} frame(s) failed (listed above; the cache {out} "
                           f"holds the others); frame {fid}: {why}",
                           hint="fix the listed files and rerun: done frames are skipped")


def _build_teacher(kind: TeacherKind, model: str, pretrained: str, image_size: int, device: str, dataset: Path,
                   console, rank: int = 0, world_size: int = 1):
    from relidar.training.teachers.registry import build_teacher

    if kind is TeacherKind.synthetic:
        from relidar.synthetic.truth import TruthStore

        truth = TruthStore()
        if truth.scan(dataset):  # the renderer's masks `relidar synth` wrote beside the images
            return build_teacher(kind, truth=truth)
        # Images without masks (a real dataset, an older log): only the colour teacher can read them.
        console.print(f"no renderer masks (truth_2/ or *_truth/) under {dataset}: using the version-1 (colour) "
                      "simulated teacher")
        return build_teacher(kind, synthetic={"version": 1})
    if device == "auto":
        import torch

        from relidar.training.distributed import place_rank

        # torchrun sets LOCAL_RANK; ranks started by hand (--rank/--world-size) are taken as one machine's,
        # so they spread over its GPUs instead of all landing on cuda:0
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        device = place_rank("auto", local_rank, local_world, torch.cuda.device_count()).device
    return build_teacher(kind, model=model, pretrained=pretrained, device=device, image_size=image_size)


def _print_report(console, report) -> None:
    from rich.table import Table

    table = Table(title=f"relidar prepare, rank {report.rank} of {report.world_size}")
    table.caption = f"storage: {report.storage}" + (
        f" (the projection keeps {100 * report.projection_energy:.1f} % of the fitted features' energy)"
        if report.projection_energy is not None else "")
    for col in ("assigned", "done", "skipped", "recomputed", "failed", "frames/s", "MB/frame", "pairs/frame", "bytes/pair"):
        table.add_column(col, justify="right")
    n = len(report.done)
    table.add_row(
        str(report.assigned), str(n), str(len(report.skipped)), str(len(report.replaced)), str(len(report.failed)),
        f"{report.frames_per_second:.3f}", f"{report.bytes_per_frame / 1e6:.2f}",
        f"{report.pairs_written / n:.0f}" if n else "-",
        f"{report.bytes_written / report.pairs_written:.0f}" if report.pairs_written else "-",
    )
    console.print(table)
    console.print("skipped: a verified file of the frame was already there; recomputed: its file was partial, corrupt or stale")
    if report.done:
        console.print("seconds by phase: " + ", ".join(f"{k} {v:.2f}" for k, v in report.phase_seconds.items())
                      + f"; checking existing files {report.verify_seconds:.2f}")
    if report.points_dropped_nonfinite:
        console.print(f"repaired: {report.points_dropped_nonfinite} point(s) with a NaN/inf coordinate or intensity "
                      "left out of the cache (counted in reports/rank-*.json)")
    if report.removed_partials:
        console.print(f"removed {report.removed_partials} partial file(s) left by an interrupted run")
    for title, rows in (("recomputed", report.replaced), ("failed", report.failed)):
        if rows:
            t = Table(title=f"{title} frames")
            t.add_column("frame")
            t.add_column("reason")
            for fid, why in rows[:20]:
                t.add_row(fid, why)
            if len(rows) > 20:
                t.add_row("...", f"{len(rows) - 20} more in reports/rank-{report.rank}.json")
            console.print(t)


def main() -> None:
    """Entry point for ``python -m relidar.cli.prepare`` (torchrun -m)."""
    single_command_app(prepare)()


if __name__ == "__main__":
    main()
