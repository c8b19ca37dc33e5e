"""``relidar segment INPUT --bundle DIR --out OUT``: label one scan file with a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from relidar.cli.app import Apps


def register(apps: Apps) -> None:
    apps.root.command("segment")(segment)


def segment(
    scan: Path = typer.Argument(..., help="Scan file: .bin (KITTI), .npy [N,>=3], .pcd or .ply."),
    bundle: Path = typer.Option(..., "--bundle", help="Model bundle folder (`relidar export bundle`)."),
    out: Path = typer.Option(..., "--out", help="Output folder: <scan>.ply (coloured, with label and score) and "
                             "<scan>_bev.png (bird's-eye view with a legend)."),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    classes: str = typer.Option("", "--classes", help="Comma-separated class names to use instead of the bundle's "
                                "vocabulary (encoded with the bundle's text encoder)."),
    extent: float = typer.Option(50.0, "--range", min=1.0, help="Half-width of the BEV picture, metres."),
) -> None:
    """Label every point of a scan; write a coloured .ply and a BEV picture with a class legend."""
    from rich.console import Console
    from rich.table import Table

    from relidar.core.scan_io import read_scan, write_ply
    from relidar.core.segmenter import Segmenter
    from relidar.core.viz.bev import BevView, label_colours, render_bev

    console = Console()
    points = read_scan(scan)
    seg = Segmenter(bundle, backend=backend, device=device)
    if classes.strip():
        seg.set_classes([c.strip() for c in classes.split(",") if c.strip()])
    result = seg(points)
    vocab = seg.vocabulary
    out.mkdir(parents=True, exist_ok=True)
    colours = label_colours(result.labels, vocab.colors)
    ply = write_ply(out / f"{scan.stem}.ply", points[:, :3], colours, label=result.labels, score=result.scores)
    png = render_bev(out / f"{scan.stem}_bev.png", points[:, :3], labels=result.labels, palette=vocab.colors,
                     class_names=vocab.class_names, view=BevView((-extent, extent), (-extent, extent), 0.1),
                     title=f"{scan.name}: {len(points)} points, {seg.backend}, {result.timings_ms['total']:.0f} ms")
    table = Table(title=f"{scan.name} ({seg.backend})")
    table.add_column("class")
    table.add_column("points", justify="right")
    table.add_column("mean score", justify="right")
    for k, name in enumerate(vocab.class_names):
        mask = result.labels == k
        if mask.any():
            table.add_row(name, str(int(mask.sum())), f"{float(result.scores[mask].mean()):.2f}")
    table.add_row("(outside crop)", str(int((result.labels < 0).sum())), "-")
    console.print(table)
    console.print(" ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))
    console.print(f"wrote {ply}\nwrote {png}")
