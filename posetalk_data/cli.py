"""posetalk-data: build PoseTalk training shards from talking-face videos."""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .cli_manifest import app as manifest_app
from .cli_models import app as models_app
from .cli_output import console, fail, fail_unreachable, run_command, storage_errors
from .config import ConfigError, load_config, shipped

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(manifest_app, name="manifest")
sources_app = typer.Typer(help="Look at a dataset folder before building it.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(models_app, name="models")


@app.command()
def build(
    src: str = typer.Option(..., "--src", help="Source adapter: folder (every video under --input), demo (clips "
                                               "the project makes itself, offline), or a dataset under --root: "
                                               "hdtf, celebv-text, mead."),
    out: str = typer.Option(..., "--out", help="Output folder or object-store URL (s3://bucket/builds/x, gs://...): "
                                               "shards/, manifest.json, samples.parquet, failures.parquet. "
                                               "Credentials and endpoints: the AWS_* variables (AWS_ENDPOINT_URL), "
                                               "fsspec's config, or the pipeline YAML's storage: section."),
    input_dir: Optional[str] = typer.Option(None, "--input", help="Folder or URL prefix of videos for --src folder."),
    root: Optional[str] = typer.Option(None, "--root", help="Dataset folder as its users keep it (metadata files "
                                                            "and downloaded media) for hdtf, celebv-text, mead; "
                                                            "or its object-store prefix (s3://bucket/hdtf)."),
    download: bool = typer.Option(False, "--download", help="celebv-text: download missing source videos with "
                                                            "yt-dlp (needs internet)."),
    view: str = typer.Option("front", "--view", help="mead: camera view to build (front, left_30, ..., or all)."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="Pipeline YAML (default: the shipped "
                                                                      "posetalk_data/pipelines/<src>.yaml)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Speech/text models: paper (HuBERT + CLIP, "
                                                                  "needs their weights; default for datasets) or "
                                                                  "offline (mel + MiniLM, runs anywhere; default "
                                                                  "for folder and demo)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override as dotted.key=value, repeatable, "
                                                          "e.g. --set facetrack.crop_size=256."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join a running Ray cluster "
                                                                          "(e.g. 10.0.0.1:6379); default: local."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Parallel video workers (default: one "
                                                                        "per CPU; 0 runs in this process, no Ray). "
                                                                        "The speech/text model workers: --set "
                                                                        "models.workers=N, models.gpus=0.25."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any clip was dropped."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Process again the videos that have a row in "
                                                                    "failures.parquet (everything else is kept)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard clips staged in OUT by an earlier run instead of "
                                                      "resuming (needed after changing the pipeline config)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log stage details (tracebacks of failed clips)."),
) -> None:
    """Turn talking-face videos into WebDataset shards: face crop, 16 kHz audio, landmarks, head pose, gaze,
    speech features, motion prompts and their text embeddings.

    A build that is interrupted resumes when run again with the same command: finished videos are not redone.
    """
    from . import storage
    from .build import build as run_build
    from .build import check_out_dir, preflight, process_started
    from .pipeline import VideoProcessor
    from .ray_start import end_ray, start_ray_beside
    from .sources import DATASETS, source_plan

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    out = storage.location(out)
    try:
        cfg = load_config(pipeline or shipped(src), overrides,
                          profile or ("paper" if src in DATASETS else "offline"))
        storage.configure(cfg.storage.options)
        check_out_dir(out)                  # before the source writes anything (the demo writes its videos)
        processor = VideoProcessor(cfg)
        preflight(processor)                # missing ffmpeg or weights: fail now, before any clip (and Ray)
        listing = partial(source_plan, src, root or input_dir, out, **source_options(src, download, view))
        plan = start_ray_beside(listing, address=ray_address, workers=workers)   # the two at once
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err), "See `posetalk-data build --help`.")
    except storage_errors() as err:
        fail_unreachable(out if storage.is_url(out) else input_dir or root, err)
    if not plan.specs:
        end_ray()
        hint = (f"Datasets: `posetalk-data sources inspect --src {src} --root DIR` says what is there and what is "
                "missing." if src in DATASETS else
                "Videos are found by suffix (.mp4 .mov .mkv .mpg .webm ...), in subfolders too.")
        fail(f"no videos found for --src {src}" + (f" under {root or input_dir}" if root or input_dir else ""), hint)
    console.print(f"{len(plan.specs)} videos from source [bold]{src}[/] -> {out}"
                  + (f" ({len(plan.skipped)} annotated clips left out by the source, see failures.parquet)"
                     if plan.skipped else ""))
    try:
        result = run_build(plan.specs, out, cfg, source=src, root=plan.root, workers=workers, address=ray_address,
                           fresh=fresh, retry_failed=retry_failed, skipped=plan.skipped, console=console,
                           processor=processor, sizes=plan.sizes, started_at=process_started())
    except (FileNotFoundError, RuntimeError) as err:
        fail(str(err))
    except storage_errors() as err:
        fail(f"writing {out} failed: {type(err).__name__}: {err}", "Run the same command again to resume.")
    finally:
        end_ray()       # a build stopped before its workers started (the pool ends Ray otherwise)
    print_summary(result)
    if strict and result.dropped:
        console.print(f"[bold red]--strict:[/] {result.dropped} clip(s) dropped")
        raise typer.Exit(1)


def source_options(src: str, download: bool, view: str) -> dict:
    """The adapter options that apply to `src` (each adapter takes only its own)."""
    return {"celebv-text": {"download": download}, "mead": {"view": view}}.get(src, {})


def print_summary(result) -> None:
    table = Table(title=f"build summary ({result.out})")
    table.add_column("what")
    table.add_column("value", justify="right")
    counts = result.manifest["counts"]
    table.add_row("samples kept", str(counts["samples"]))
    table.add_row("shards", str(counts["shards"]))
    table.add_row("hours", f"{counts['hours']:.4f}")
    if result.resumed:
        table.add_row("videos resumed (done earlier)", str(result.resumed))
    table.add_row("clips dropped", str(result.dropped))
    for reason, n in result.reasons.most_common():
        table.add_row(f"  {reason}", str(n))
    table.add_row("wall time", f"{result.seconds:.1f} s")
    if result.startup is not None:
        table.add_row("start-up (command to first video)", f"{result.startup:.1f} s")
    table.add_row("throughput", f"{result.frames / max(result.seconds, 1e-6):.1f} frames/s")
    for stage, seconds in result.stage_seconds.items():
        table.add_row(f"  {stage} (worker time)", f"{seconds:.1f} s")
    console.print(table)
    from .storage import join

    console.print(f"shards in {join(result.out, 'shards')}; report: {join(result.out, 'report.html')}; "
                  f"check it with `posetalk-data manifest verify {result.out}`")


@sources_app.command("inspect")
def inspect_source(
    src: str = typer.Option(..., "--src", help="hdtf, celebv-text or mead."),
    root: str = typer.Option(..., "--root", help="The dataset folder (metadata files and downloaded media), or an "
                                                 "object-store prefix (s3://bucket/hdtf): one listing, no download."),
    probe: bool = typer.Option(False, "--probe", help="Also ffprobe the local files (spans past the end, crops "
                                                      "outside the frame); slower on big datasets. Files in a "
                                                      "store are not downloaded to probe."),
    view: str = typer.Option("front", "--view", help="mead: camera view."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Counts (clips annotated, videos, text coverage), what is missing or malformed, and what a build would do."""
    import json

    from .sources import DATASETS
    from .sources.inspect import inspect_source as run_inspect, render_inspection

    if src not in DATASETS:
        fail(f"sources inspect works on the datasets: {', '.join(DATASETS)}")
    options = {"mead": {"view": view}}.get(src, {})
    try:
        report = run_inspect(src, root, probe=probe, **options)
    except ValueError as err:
        fail(str(err))
    except storage_errors() as err:
        fail_unreachable(root, err)
    typer.echo(json.dumps(report, indent=1, default=str) if as_json else render_inspection(report))


@app.command()
def extend(
    manifest: str = typer.Option(..., "--manifest", help="A build's manifest.json (path or URL)."),
    features: str = typer.Option(..., "--features", help="Comma-separated layers to add or replace: mel, wav2vec2, "
                                                         "hubert (speech), clip, minilm (text)."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="Pipeline YAML for the models' settings."),
    overrides: list[str] = typer.Option([], "--set", help="e.g. --set speech.local_dir=/models/hubert-base"),
) -> None:
    """Add or replace feature layers of an existing build without redoing the visual stages (shards rewritten
    atomically, manifest updated last)."""
    from .extend import extend as run_extend
    from .reading import ManifestError

    try:
        cfg = load_config(pipeline, overrides)
        result = run_extend(manifest, [f.strip() for f in features.split(",") if f.strip()], cfg,
                            progress=lambda shard: console.print(f"extended {shard}"))
    except (ConfigError, ManifestError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    except storage_errors() as err:
        fail(f"cannot extend {manifest}: {type(err).__name__}: {err}", "Run the same command again to resume.")
    console.print(f"{manifest}: layers now {', '.join(sorted(result['members']))}")


@app.command()
def report(
    manifest: str = typer.Option(..., "--manifest", help="A build's manifest.json (path or URL)."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder (or URL) for report.html (default: beside the "
                                                          "manifest)."),
    thumbnails: int = typer.Option(24, "--thumbnails", min=0, help="How many sample thumbnails to draw."),
) -> None:
    """Write report.html: counts, drop reasons, length/pose/gaze histograms, throughput, thumbnails."""
    import tarfile

    from . import storage
    from .reading import ManifestError, UnsafeShardError
    from .report import write_report

    try:
        if not storage.is_file(manifest):
            fail(f"manifest not found: {manifest}")
        if out is not None and storage.is_file(out):
            fail(f"--out {out} is a file; give the folder report.html is written to")
    except storage_errors() as err:
        fail(f"cannot reach {manifest}: {type(err).__name__}: {err}")
    manifest = storage.location(manifest)
    try:
        path = write_report(out or storage.parent(manifest), manifest_path=manifest, max_thumbnails=thumbnails)
    except (ManifestError, UnsafeShardError, tarfile.TarError, *storage_errors()) as err:
        fail(f"cannot report on {manifest}: {err}", "Check the build with `posetalk-data manifest verify`.")
    console.print(f"wrote {path}")


@app.command()
def version() -> None:
    """Print the versions a build would record in its manifest."""
    from .build import package_versions

    for name, value in package_versions().items():
        typer.echo(f"{name}: {value}")


def entry() -> None:
    run_command(app)


if __name__ == "__main__":
    entry()
