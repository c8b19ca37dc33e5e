"""Wires every job's commands into one typer app. Command modules import heavy libraries lazily,
inside their functions, so ``relidar --help`` stays fast."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer


@dataclass(frozen=True)
class Apps:
    root: typer.Typer
    bench: typer.Typer
    render: typer.Typer
    export: typer.Typer


# Each module exposes ``register(apps: Apps) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "relidar.cli.bench_student",
    "relidar.cli.synth",
    "relidar.cli.render_bev",
    "relidar.cli.replay",
    "relidar.cli.bench_node",
    "relidar.cli.prepare",
    "relidar.cli.render_overlay",
    "relidar.cli.distill",
    "relidar.cli.evaluate",
    "relidar.cli.compare",
    "relidar.cli.demo",
    "relidar.cli.export",
    "relidar.cli.segment",
    "relidar.cli.bench_segment",
    "relidar.cli.bench_gpu",
    "relidar.cli.vocabulary",
)


def build_app() -> typer.Typer:
    root = typer.Typer(
        name="relidar",
        help="Distill a CLIP-family 2D model into a 3D sparse-conv lidar network; export it; label lidar scans.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        # Docstrings are wrapped at 100 columns in the source; markdown mode re-flows them to the terminal.
        rich_markup_mode="markdown",
    )
    apps = Apps(
        root=root,
        bench=typer.Typer(help="Benchmarks: timings and memory as JSON, side by side with a reference.",
                          no_args_is_help=True, rich_markup_mode="markdown"),
        render=typer.Typer(help="Pictures: camera overlays and bird's-eye views, to PNG.",
                           no_args_is_help=True, rich_markup_mode="markdown"),
        export=typer.Typer(help="Export the student to ONNX / TensorRT and write model bundles.",
                           no_args_is_help=True, rich_markup_mode="markdown"),
    )
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(apps)
    root.add_typer(apps.bench, name="bench")
    root.add_typer(apps.render, name="render")
    root.add_typer(apps.export, name="export")
    return root


def main() -> None:
    build_app()()
