"""``relidar bench segment``: end-to-end Segmenter latency and memory, interleaved in one run with every other
available backend, the PyTorch forward and spconv on the same scan (relidar.bench.segment)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from relidar.cli.app import Apps
from relidar.cli.common import FORMULATION_HELP, formulation_choice

DEFAULT_SWEEP = (30_000, 60_000, 120_000, 180_000, 250_000)


def register(apps: Apps) -> None:
    apps.bench.command("segment")(bench_segment)


def bench_segment(
    bundle: Path = typer.Option(..., "--bundle", help="Model bundle folder (`relidar export bundle`)."),
    scan: Path = typer.Option(..., "--scan", help="Scan to label (.bin/.npy/.pcd/.ply)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="auto, fused, onnxruntime, tensorrt or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    formulation: str = typer.Option("auto", "--formulation", help=FORMULATION_HELP),
    compare_formulations: bool = typer.Option(False, "--compare-formulations", help="Time every backend in both "
                                              "graphs (pairs and table), and torch with both pipelines (host "
                                              "preprocessing, device-resident), interleaved in the same run, to "
                                              "choose --formulation for this machine."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads of every side: the fused "
                                          "backend's and ONNX Runtime's intra-op threads and torch's (the torch backend, spconv) "
                                          "(default: one per physical core)."),
    lanes: int = typer.Option(1, "--lanes", min=1, max=16, help="Also measure N calls at once (the node's lanes, "
                              "CPUs / N threads each) against N calls in a row, interleaved: scans per second."),
    repeat: int = typer.Option(10, "--repeat", min=1, help="Timed repetitions (after one warm-up)."),
    spconv: bool = typer.Option(True, "--spconv/--no-spconv", help="Also time the spconv reference, interleaved "
                                "(needs torch+spconv)."),
    sweep: bool = typer.Option(False, "--sweep", help="Also time 30k..250k-point versions of the scan "
                               "(subsampled, or duplicated with 2 cm jitter) and plot cost vs size."),
    sweep_repeat: int = typer.Option(3, "--sweep-repeat", min=1, help="Repetitions per sweep size."),
    sweep_sizes: str = typer.Option(",".join(str(n) for n in DEFAULT_SWEEP), "--sweep-sizes",
                                    help="Comma-separated point counts for --sweep."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results here (JSON; the sweep plot "
                                            "goes beside it as NAME_sweep.png)."),
) -> None:
    """Time the Segmenter per scan (preprocess, network, postprocess, total; p50/p90) and its peak RSS, in the
    same rounds as every other available backend, the PyTorch forward of the same graph and spconv, all at
    one thread count; ratio = ours / spconv (total p50); the machine (CPU, cores, BLAS, GPU) goes in the JSON."""
    from rich.console import Console
    from rich.table import Table

    from relidar.bench.segment import plot_sweep, run_segment_bench
    from relidar.core.errors import RelidarError
    from relidar.core.scan_io import read_scan

    console = Console()
    pieces = [n.strip() for n in sweep_sizes.split(",") if n.strip()] if sweep else []
    if not all(n.isdigit() and int(n) > 0 for n in pieces):
        raise RelidarError(f"{sweep_sizes!r}: expected comma-separated positive integers", field="--sweep-sizes")
    sizes = [int(n) for n in pieces]
    points = read_scan(scan)
    result = run_segment_bench(bundle, points, backend, device, repeat, spconv, sizes, sweep_repeat, threads,
                               formulation=formulation_choice(formulation), compare_formulations=compare_formulations,
                               lanes=lanes,
                               on_step=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    data = result.to_json()
    data["scan"] = str(scan)
    machine = result.machine
    table = Table(title=f"segment: {result.points} points, {result.voxels} voxels, {result.backend} ({result.formulation})"
                        f", {result.threads} thread(s), {machine.get('cpu_model')}")
    table.add_column("stage")
    table.add_column("p50 ms", justify="right")
    table.add_column("p90 ms", justify="right")
    for stage in ("preprocess", "network", "postprocess", "total"):
        table.add_row(stage, f"{data[f'{stage}_ms_p50']:.1f}", f"{data[f'{stage}_ms_p90']:.1f}")
    table.add_row("peak RSS (MB)", f"{result.peak_rss_mb:.0f}", "")
    for name, entry in result.entries.items():
        table.add_row(f"{name} ({entry['kind']}), interleaved: network / total", f"{entry['network_ms_p50']:.1f} / "
                      f"{entry['total_ms_p50']:.1f}", f"labels {100 * entry['label_agreement']:.2f} % equal")
    for label, value in (("ratio total (ours / spconv)", result.ratio),
                         ("ratio network (ours / spconv)", result.network_vs_spconv),
                         ("ratio network (ours / PyTorch forward)", result.network_vs_pytorch)):
        if value is not None:
            table.add_row(label, f"{value:.2f}", "")
    for name, error in result.load_errors.items():
        table.add_row(f"{name}: not loaded", "", error[:60])
    if result.lanes:
        lane = result.lanes
        table.add_row(f"{lanes} lanes: scans/s (1 call at a time)", f"{lane['lanes_scans_per_s']:.1f} "
                      f"({lane['single_scans_per_s']:.1f})", f"labels {100 * lane['label_agreement']:.2f} % equal")
        table.add_row(f"{lanes} lanes: total per call", f"{lane['lanes_call_total_ms_p50']:.1f}", "")
    console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        if result.sweep:
            data["sweep_plot"] = str(plot_sweep(result, json_out.with_name(json_out.stem + "_sweep.png")))
        json_out.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {json_out}", highlight=False, soft_wrap=True)
        if result.sweep:
            console.print(f"wrote {data['sweep_plot']}", highlight=False, soft_wrap=True)
