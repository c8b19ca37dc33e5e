"""``relidar vocabulary build|show``: make the vocabulary JSON that distillation configs, ``evaluate`` and
``export bundle`` read, and inspect one.

    relidar vocabulary build --classes nuscenes --teacher maskclip --out runs/vocab/nuscenes_vitb16.json
    relidar vocabulary show runs/vocab/nuscenes_vitb16.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import typer

from relidar.cli.app import Apps
from relidar.training.teachers.registry import TeacherKind


def register(apps: Apps) -> None:
    vocabulary_app = typer.Typer(
        help="Build a vocabulary (class names x prompt templates through the teacher's text tower) and inspect one.",
        no_args_is_help=True,
    )
    vocabulary_app.command("build")(build)
    vocabulary_app.command("show")(show)
    apps.root.add_typer(vocabulary_app, name="vocabulary")


def build(
    classes: str = typer.Option(..., "--classes", help="nuscenes (16 lidarseg classes), semantickitti (19), synthetic "
                                "(the synthetic world's 11) or a class-list YAML: '- name: car\\n  synonyms: [car, "
                                "automobile]\\n  color: [0, 0, 255]' per class."),
    teacher: TeacherKind = typer.Option(TeacherKind.maskclip, "--teacher", help="Whose text tower embeds the prompts: "
                                        "maskclip (open_clip CLIP, as `relidar prepare --teacher maskclip`) or synthetic "
                                        "(the synthetic world's simulated teacher)."),
    out: Path = typer.Option(..., "--out", "-o", help="Vocabulary JSON to write; NAME.embeddings.npy goes beside NAME.json."),
    model: str = typer.Option("ViT-B-16", "--model", help="open_clip model name (maskclip), the same as for `relidar prepare`; "
                               "or local-dir:FOLDER for a folder with open_clip_config.json and weights."),
    pretrained: str = typer.Option("laion2b_s34b_b88k", "--pretrained", help="open_clip pretrained tag or checkpoint "
                                   "path (maskclip); 'none' for random weights (tests, benchmarks)."),
    device: str = typer.Option("auto", "--device", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0'... (maskclip)."),
    templates: str = typer.Option("default", "--templates", help="'default' (the teacher's prompt ensemble) or a text "
                                  "file with one template a line, each with one '{}' for the class word."),
    synthetic_option: Optional[list[str]] = typer.Option(None, "--synthetic-option", help="SimulatedTeacherConfig field "
                                                         "key=value (repeatable, synthetic teacher), e.g. feature_dim=64 "
                                                         "to match a config's data.synthetic.teacher."),
) -> None:
    """Embed every class's synonyms x prompt templates with the teacher's text encoder, average them per
    class and write the vocabulary (JSON + embeddings .npy) that eval.vocabulary and `relidar export bundle`
    read. Use the same teacher (model and weights) as `relidar prepare` so text and features share a space."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from relidar.core.config import parse_overrides
    from relidar.core.vocabulary import VocabularyError
    from relidar.training.teachers.registry import build_teacher, default_templates
    from relidar.training.text_embeddings import build_vocabulary, load_templates_file, resolve_class_list

    console = Console()
    if out.suffix.lower() != ".json":
        raise VocabularyError(f"the vocabulary file must end in .json (its embeddings go to {out.stem}.embeddings.npy "
                              "beside it)", path=out, field="--out")
    specs = resolve_class_list(classes)
    prompt_templates = default_templates(teacher) if templates == "default" else load_templates_file(templates)
    options = dict(parse_overrides(synthetic_option or []))
    with console.status(f"building the {teacher.value} teacher"):
        encoder = build_teacher(teacher, model=model, pretrained=pretrained, device=device, synthetic=options)
    total = sum(len(s.synonyms or (s.name,)) for s in specs) * len(prompt_templates)
    with Progress(TextColumn("encoding prompts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("prompts", total=total)
        vocab = build_vocabulary(specs, prompt_templates,
                                 _ProgressEncoder(encoder, lambda n: progress.advance(task, n)), encoder.text_spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab.save(out)
    console.print(f"{vocab.num_classes} classes, {vocab.feature_dim}-d, {total} prompts, encoder "
                  f"{vocab.encoder.describe()}", highlight=False)
    console.print(f"wrote {out}\nwrote {out.with_name(out.stem + '.embeddings.npy')}", highlight=False, soft_wrap=True)
    _print_vocabulary(console, vocab, str(out), top=5)


def show(
    path: Path = typer.Argument(..., help="Vocabulary JSON (from `relidar vocabulary build`, or a bundle's vocabulary.json)."),
    top: int = typer.Option(5, "--top", min=0, help="How many of the most similar class pairs to list."),
) -> None:
    """Print a vocabulary's classes, synonyms, colours, embedding size and encoder, and the class pairs whose
    text embeddings are closest (cosine): the classes a zero-shot segmenter will confuse most."""
    from rich.console import Console

    from relidar.core.vocabulary import Vocabulary

    console = Console()
    vocab = Vocabulary.load(path)
    _print_vocabulary(console, vocab, str(path), top)


class _ProgressEncoder:
    """Passes prompts through to a text encoder and reports how many it encoded (for a progress bar)."""

    def __init__(self, encoder, on_batch: Callable[[int], None]) -> None:
        self._encoder = encoder
        self._on_batch = on_batch

    @property
    def feature_dim(self) -> int:
        return self._encoder.feature_dim

    def encode_text(self, prompts: Sequence[str]):
        rows = self._encoder.encode_text(prompts)
        self._on_batch(len(prompts))
        return rows


def _print_vocabulary(console, vocab, source: str, top: int) -> None:
    from rich.table import Table

    from relidar.training.text_embeddings import confusable_pairs

    console.print(f"[bold]{source}[/bold]: {vocab.num_classes} classes, {vocab.feature_dim}-d embeddings, "
                  f"encoder {vocab.encoder.describe()}, {len(vocab.templates)} prompt templates")
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("colour")
    table.add_column("synonyms")
    for i, (name, words, rgb) in enumerate(zip(vocab.class_names, vocab.synonyms, vocab.colors)):
        r, g, b = (int(c) for c in rgb)
        table.add_row(str(i), name, f"[on rgb({r},{g},{b})]    [/] {r:3d},{g:3d},{b:3d}", ", ".join(words))
    console.print(table)
    pairs = confusable_pairs(vocab, top)
    if pairs:
        conf = Table(title=f"{len(pairs)} most similar class pairs",
                     caption="cosine of the classes' text embeddings: the higher, the likelier the teacher confuses them")
        conf.add_column("class")
        conf.add_column("class")
        conf.add_column("cosine", justify="right")
        for a, b, cos in pairs:
            conf.add_row(a, b, f"{cos:.3f}")
        console.print(conf)
