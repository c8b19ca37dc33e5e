"""``relidar segment INPUT --bundle DIR --out OUT``: label scans with a bundle and write what other tools open.

INPUT is one scan file (.bin/.npy/.pcd/.ply), a folder of scan files, a SemanticKITTI root or
sequence folder (``sequences/XX/velodyne`` or ``velodyne/``), or a rosbag2 (folder, .mcap or .db3).
OUT is exactly the folder written (new or empty; ``relidar.core.rundir``):

    OUT/<scan>.ply, OUT/<scan>.label           scan files and folders of them
    OUT/sequences/XX/predictions/<scan>.label  SemanticKITTI input: the layout its evaluation tools read
    OUT/sequences/XX/ply/<scan>.ply
    OUT/labels.yaml                            .label ids -> class names and colours
    OUT/bag/                                   rosbag2 (MCAP): the node's labelled clouds + legend
    OUT/<scan>_bev.png                         bird's-eye views of the first --pictures scans

Output names keep the scan's stem (``000000.bin`` -> ``000000.label``), as SemanticKITTI's tools pair
a prediction with its scan; a folder holding two scans of one stem (``a.bin`` and ``a.pcd``) is refused
before anything is written, naming both. OUT is a folder: an ``--out`` ending in a file's suffix
(``labelled.ply``) is refused rather than made a folder of that name (``--write ply`` writes only PLY).

Scans that cannot be read are listed and make the exit code 1 (the others are still written); so does
a scan with nothing labelled (no finite point inside the bundle's crop box: millimetres, another axis
convention), warned with the fraction outside and the crop. Non-finite points are repaired and
counted by the Segmenter (``relidar.core.segmenter``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import typer

from relidar.cli.app import Apps
from relidar.cli.common import FORMULATION_HELP

OUTPUT_KINDS = ("ply", "label", "bag", "png")
# --out suffixes that name a file, not the folder segment writes
FILE_SUFFIXES = (".ply", ".label", ".mcap", ".db3", ".png", ".bin", ".npy", ".pcd", ".yaml")
# A scan with more of its finite points outside the crop box than this is warned about even when some
# were labelled: a real scan loses a few per cent beyond the box's range, not half.
OUTSIDE_WARN_FRACTION = 0.5


def register(apps: Apps) -> None:
    apps.root.command("segment")(segment)


@dataclass(frozen=True)
class _Scan:
    source: Path        # the file it came from (the bag for bag messages)
    folder: Path        # output sub-folder for its per-scan files, relative to OUT
    label_folder: Path  # where its .label goes, relative to OUT
    stem: str
    stamp_ns: int
    frame_id: str
    read: Callable[[], np.ndarray]  # the scan's [N,4] points


def _is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix.lower() in (".mcap", ".db3")


def _scans(path: Path, lidar_topic: str | None, intensity_scale: float) -> tuple[str, list[_Scan]]:
    """What INPUT holds, and its scans in order (read lazily)."""
    from relidar.core.errors import RelidarError
    from relidar.core.scan_io import SCAN_SUFFIXES, read_scan

    period = 100_000_000  # scans from files get 10 Hz stamps in the bag
    if not path.exists():
        raise RelidarError("no such file or folder", path=path, field="INPUT")
    if _is_bag(path):
        from relidar.training.readers.rosbag import RosbagReader

        reader = RosbagReader(path, lidar_topic=lidar_topic, intensity_scale=intensity_scale)
        frame = reader.lidar_frame
        return f"rosbag2 {path} ({reader.lidar_topic})", [
            _Scan(path, Path("."), Path("."), f"{i:06d}", int(fid.split("_")[0]), frame,
                  (lambda i=i: reader[i].points)) for i, fid in enumerate(reader.frame_ids)]
    if path.is_file():
        return f"scan {path}", [_Scan(path, Path("."), Path("."), path.stem, period, "lidar",
                                      lambda: read_scan(path))]
    sequences = sorted(d for d in (path / "sequences").glob("*") if (d / "velodyne").is_dir()) \
        if (path / "sequences").is_dir() else ([path] if (path / "velodyne").is_dir() else [])
    if sequences:
        out = []
        for seq in sequences:
            rel = Path("sequences") / seq.name
            for f in sorted((seq / "velodyne").glob("*.bin")):
                # stamps run on across sequences: a bag of several plays them one after the other
                out.append(_Scan(f, rel / "ply", rel / "predictions", f.stem, (len(out) + 1) * period, "velodyne",
                                 lambda f=f: read_scan(f)))
        return f"SemanticKITTI {path} (sequences {', '.join(s.name for s in sequences)})", out
    # every entry named like a scan, not only regular files: a dangling link or a folder named x.bin is
    # listed as unreadable (read_scan says why) instead of vanishing from the run
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in SCAN_SUFFIXES)
    if not files:
        raise RelidarError("holds no scan files (.bin/.npy/.pcd/.ply), no SemanticKITTI sequence and no rosbag2",
                           path=path, field="INPUT", hint="give a scan, a folder of scans, a sequence or a bag")
    seen: dict[str, Path] = {}
    for f in files:  # casefolded: on a case-insensitive disk A.bin and a.pcd collide too
        first = seen.setdefault(f.stem.casefold(), f)
        if first is not f:
            raise RelidarError(f"and {f.name} would both be written as {f.stem}.* (outputs are named by the scan's "
                               "stem)", path=first, field="INPUT", hint="rename or move one of them")
    return f"folder {path}", [_Scan(f, Path("."), Path("."), f.stem, (k + 1) * period, "lidar", lambda f=f: read_scan(f))
                              for k, f in enumerate(files)]


def segment(
    input: Path = typer.Argument(..., help="A scan file (.bin KITTI, .npy [N,>=3], .pcd, .ply), a folder of them, a "
                                 "SemanticKITTI root or sequence, or a rosbag2 (folder, .mcap, .db3)."),
    bundle: Path = typer.Option(..., "--bundle", help="Model bundle folder (`relidar export bundle`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (new or empty; not a file name such as "
                             "x.ply): labelled PLY, SemanticKITTI .label files + labels.yaml, a labelled rosbag2 "
                             "(MCAP) in OUT/bag, BEV pictures, each named by its scan's stem."),
    write: str = typer.Option(",".join(OUTPUT_KINDS), "--write", help="Which outputs, comma-separated: "
                              "ply, label, bag, png."),
    backend: str = typer.Option("auto", "--backend", help="auto, fused, onnxruntime, tensorrt or torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    formulation: str = typer.Option("auto", "--formulation", help=FORMULATION_HELP),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names to use instead of the "
                                          "bundle's vocabulary (encoded with the bundle's text encoder)."),
    pictures: int = typer.Option(1, "--pictures", min=0, help="Bird's-eye views of the first N scans."),
    extent: float = typer.Option(50.0, "--range", min=1.0, help="Half-width of the BEV pictures, metres."),
    lidar_topic: Optional[str] = typer.Option(None, "--lidar-topic", help="PointCloud2 topic of a bag with several."),
    intensity_scale: float = typer.Option(1.0, "--intensity-scale", help="Bag input: brings the driver's intensity "
                                          "to 0..1 (0.00392 for drivers publishing 0..255)."),
    lanes: int = typer.Option(1, "--lanes", min=1, max=16, help="Scans labelled at once, CPUs / N network threads "
                              "each (the node's lanes; on a small CPU 2 label ~1.4-1.9x more scans a second). "
                              "Outputs are written in input order either way."),
) -> None:
    """Label every point of the scans in INPUT; write labelled PLY (with intensity), SemanticKITTI .label
    files, a labelled rosbag2 (MCAP) for `ros2 bag play`/RViz/Foxglove and bird's-eye views.

    Exit code 1 when a scan cannot be read or has nothing labelled (all its points outside the crop box
    or non-finite; each is warned about, with the fraction outside and the box): the other scans are
    still written, and a script sees that part of its input gave no labels."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from relidar.cli.common import formulation_choice, parse_classes, print_written
    from relidar.core.errors import RelidarError
    from relidar.core.rundir import new_output_dir
    from relidar.core.segmenter import Segmenter, lane_threads

    console = Console()
    kinds = tuple(k.strip() for k in write.split(","))
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise RelidarError(f"{write!r}: unknown output {', '.join(unknown) or '(none)'}", field="--write",
                           hint=f"choose from {', '.join(OUTPUT_KINDS)}")
    class_list = parse_classes(classes)
    if out.suffix.lower() in FILE_SUFFIXES:
        raise RelidarError(f"names a {out.suffix} file, but segment writes a folder (PLY, .label, bag and pictures "
                           "inside it)", path=out, field="--out",
                           hint=f"give a folder such as --out {out.with_suffix('')}; --write ply writes only PLY")
    what, scans = _scans(input, lidar_topic, intensity_scale)
    if input.is_file() and not _is_bag(input):
        first = scans[0].read()  # one scan file: a bad file is the command's one error, before anything is written
        scans = [dataclasses.replace(scans[0], read=lambda: first)]
    seg = Segmenter(bundle, backend=backend, device=device, threads=lane_threads(lanes),
                    formulation=formulation_choice(formulation))
    if class_list is not None:
        seg.set_classes(class_list)
    out = new_output_dir(out)
    console.print(f"{what}: {len(scans)} scan(s) -> {out} ({seg.backend})", highlight=False)
    student = seg.bundle.manifest.student
    with _Outputs(out, kinds, seg.vocabulary, pictures, extent, (student.crop_min, student.crop_max)) as outputs, \
            Progress(TextColumn("labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, transient=True) as progress:
        bar = progress.add_task("scans", total=len(scans))
        started = time.perf_counter()
        for scan, points, result in _labelled(scans, seg, lanes):
            progress.advance(bar)
            if result is None:
                outputs.failed.append((scan.source, points.one_line()))
                console.print(f"[yellow]skipped: {points.one_line()}[/yellow]", highlight=False)
                continue
            outputs.add(scan, points, result)
        seconds = time.perf_counter() - started
    _summary(console, outputs, seg, lanes, seconds)
    print_written(console, outputs.written)
    if outputs.labelled_scans == 0 and not outputs.failed:
        raise RelidarError("no scan had a finite point inside the crop box to label (warnings above); the outputs "
                           "are empty", path=input, hint="check the scans' units (metres) and axes (x forward, z up)")
    unlabelled = outputs.scans - outputs.labelled_scans
    if outputs.failed or unlabelled:
        parts = [f"{n} of {len(scans)} scan(s) {why}" for n, why in (
            (len(outputs.failed), "could not be read"), (unlabelled, "had nothing labelled")) if n]
        raise RelidarError(f"{' and '.join(parts)} (listed above; the others were written)", path=input,
                           hint="fix or remove those scans")


def _labelled(scans: list[_Scan], seg, lanes: int):
    """(scan, points, Segmentation) in input order, or (scan, RelidarError, None) for a scan that cannot be read.

    Scans are read here, in order (a bag reader is not shared between threads), and labelled by ``lanes``
    worker threads with the one Segmenter; at most ``lanes`` labelled scans wait to be written."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from relidar.core.errors import RelidarError

    def done(item):
        scan, points, future = item
        return (scan, points, None) if future is None else (scan, points, future.result())

    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="relidar-lane") as pool:
        pending: deque = deque()
        for scan in scans:
            try:
                points = scan.read()
            except RelidarError as exc:
                pending.append((scan, exc, None))
            else:
                pending.append((scan, points, pool.submit(seg, points)))
            while len(pending) > lanes:
                yield done(pending.popleft())
        while pending:
            yield done(pending.popleft())


class _Outputs:
    """Writes each labelled scan in the requested formats and keeps the counts for the summary."""

    def __init__(self, out: Path, kinds: tuple[str, ...], vocabulary, pictures: int, extent: float,
                 crop: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
        self.out, self.kinds, self.vocab, self.crop = out, kinds, vocabulary, crop
        self.pictures, self.extent = pictures, extent
        self.written: list[Path] = []
        self.failed: list[tuple[Path, str]] = []
        self.warnings: list[str] = []
        self.counts = np.zeros(len(vocabulary.class_names) + 1, dtype=np.int64)  # last: unknown
        self.score_sums = np.zeros(len(vocabulary.class_names))
        self.scans = self.labelled_scans = self.non_finite_xyz = self.non_finite_intensity = 0
        self.milliseconds = 0.0
        self._bag = None

    def __enter__(self) -> "_Outputs":
        if "bag" in self.kinds:
            from relidar.export.labelled import LabelledBagWriter

            self._bag = LabelledBagWriter(self.out / "bag", self.vocab.class_names, self.vocab.colors).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bag is not None:
            self._bag.__exit__(None, None, None)
            if self._bag.messages:
                self.written.append(self._bag.path)
        if "label" in self.kinds and self.scans:
            from relidar.export.labelled import LABELS_YAML, write_labels_yaml

            self.written.append(write_labels_yaml(self.out / LABELS_YAML, self.vocab.class_names, self.vocab.colors))

    def add(self, scan: _Scan, points: np.ndarray, result) -> None:
        from relidar.core.viz.bev import BevView, render_bev
        from relidar.export.labelled import LabelledScan, write_labelled_ply, write_scan_labels

        vocab = self.vocab
        labelled = LabelledScan(scan.stem, points, result.labels, result.scores, scan.stamp_ns, scan.frame_id)
        finite = len(points) - result.non_finite_xyz
        outside = int((result.labels < 0).sum()) - result.non_finite_xyz
        name = scan.source if scan.source.stem == scan.stem else f"{scan.source} {scan.stem}"
        if finite == 0:
            self.warnings.append(f"{name}: {len(points)} points, none finite: nothing to label "
                                 "(its outputs are empty)" if len(points) else f"{name}: no points (empty scan)")
        elif outside == finite or outside > OUTSIDE_WARN_FRACTION * finite:
            box = ", ".join(f"{axis} {lo:g}..{hi:g}" for axis, lo, hi in zip("xyz", *self.crop))
            self.warnings.append(f"{name}: {outside} of {finite} finite points ({100 * outside / finite:.1f} %) are "
                                 f"outside the bundle's crop box ({box} m)"
                                 + (": nothing labelled" if outside == finite else "")
                                 + "; are the points in metres, x forward, z up?")
        if finite > outside:
            self.labelled_scans += 1
        self.scans += 1
        self.non_finite_xyz += result.non_finite_xyz
        self.non_finite_intensity += result.non_finite_intensity
        self.milliseconds += result.timings_ms["total"]
        known = (result.labels >= 0) & (result.labels < len(vocab.class_names))
        self.counts[:-1] += np.bincount(result.labels[known], minlength=len(vocab.class_names))
        self.counts[-1] += int((~known).sum())
        self.score_sums += np.bincount(result.labels[known], weights=result.scores[known],
                                       minlength=len(vocab.class_names))
        if "ply" in self.kinds:
            self.written.append(write_labelled_ply(self._path(scan.folder, f"{scan.stem}.ply"), labelled, vocab.colors))
        if "label" in self.kinds:
            self.written.append(write_scan_labels(self._path(scan.label_folder, f"{scan.stem}.label"), labelled,
                                                  vocab.class_names))
        if self._bag is not None:
            self._bag.write(labelled)
        if "png" in self.kinds and self.scans <= self.pictures and finite:
            view = BevView((-self.extent, self.extent), (-self.extent, self.extent), 0.1)
            self.written.append(render_bev(
                self._path(scan.folder, f"{scan.stem}_bev.png"), points[:, :3], labels=result.labels,
                palette=vocab.colors, class_names=vocab.class_names, view=view,
                title=f"{scan.stem if scan.source.stem == scan.stem else f'{scan.source.name} {scan.stem}'}: "
                      f"{len(points)} points, labels"))

    def _path(self, folder: Path, name: str) -> Path:
        path = self.out / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _summary(console, outputs: _Outputs, seg, lanes: int, seconds: float) -> None:
    from rich.table import Table

    from relidar.core.segmenter import repair_text

    names = seg.vocabulary.class_names
    per_scan = f"{outputs.milliseconds / max(outputs.scans, 1):.0f} ms per scan"
    if lanes > 1:  # several at once: each takes longer than alone, and the rate is what counts
        per_scan += f" in each of {lanes} lanes, {outputs.scans / max(seconds, 1e-9):.1f} scans/s"
    table = Table(title=f"{outputs.scans} scan(s) labelled with {seg.backend}, {per_scan}")
    table.add_column("class")
    table.add_column("points", justify="right")
    table.add_column("mean score", justify="right")
    for k, name in enumerate(names):
        if outputs.counts[k]:
            table.add_row(name, str(int(outputs.counts[k])), f"{outputs.score_sums[k] / outputs.counts[k]:.2f}")
    table.add_row("unknown (outside the crop box, non-finite)", str(int(outputs.counts[-1])), "-")
    console.print(table)
    repaired = repair_text(outputs.non_finite_xyz, outputs.non_finite_intensity)
    if repaired:
        console.print(f"[yellow]repaired: {repaired}[/yellow]", highlight=False)
    for text in outputs.warnings:
        console.print(f"[yellow]warning: {text}[/yellow]", highlight=False)
