"""Wires every job's commands into one typer app. Command modules import heavy libraries lazily,
inside their functions, so ``relidar --help`` stays fast.

Errors: library code raises :class:`relidar.core.errors.RelidarError` (and its subclasses) for input
it cannot use; this is the one place they are caught. The command ends with the error's one-line
form on stderr and exit code 1 -- no traceback, however the command was reached (``relidar``, the
tests' ``CliRunner``). Commands catch nothing themselves.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import click
import typer
from typer.core import TyperCommand, TyperGroup

from relidar.core.errors import RelidarError


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
    "relidar.cli.view",
)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A RelidarError becomes one line on stderr and exit code 1."""
    try:
        yield
    except RelidarError as exc:
        typer.secho(f"error: {exc.one_line()}", err=True, fg="red")
        # typer vendors its own click: only its Exit ends the command quietly (click.exceptions.Exit printed
        # a traceback outside CliRunner)
        raise typer.Exit(1) from None


class RelidarGroup(TyperGroup):
    """The root command group: every subcommand runs inside its ``invoke``."""

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class RelidarCommand(TyperCommand):
    """One command run on its own (``python -m relidar.cli.distill`` under torchrun)."""

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


def single_command_app(command: Callable[..., Any]) -> typer.Typer:
    """A typer app of one command, with the same error handling as the ``relidar`` group."""
    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    app.command(cls=RelidarCommand)(command)
    return app


def _print_version(value: bool) -> None:
    if value:
        import relidar

        typer.echo(f"relidar {relidar.__version__}")
        raise typer.Exit()


def _root_options(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print relidar's version and exit."),
) -> None:
    """Distill a CLIP-family 2D model into a 3D sparse-conv lidar network; export it; label lidar scans."""


def build_app() -> typer.Typer:
    root = typer.Typer(
        name="relidar",
        cls=RelidarGroup,
        help="Distill a CLIP-family 2D model into a 3D sparse-conv lidar network; export it; label lidar scans.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        # Docstrings are wrapped at 100 columns in the source; markdown mode re-flows them to the terminal.
        rich_markup_mode="markdown",
        # -h as well as --help, on every command (click passes the names down to subcommands)
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    root.callback()(_root_options)
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
