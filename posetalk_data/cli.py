"""posetalk-data: build PoseTalk training shards from talking-face videos."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_manifest import app as manifest_app
from .config import ConfigError, load_config

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(manifest_app, name="manifest")
console = Console(stderr=True)
PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def default_pipeline(src: str) -> Path | None:
    path = PIPELINES / f"{src}.yaml"
    return path if path.is_file() else None


def fail(message: str, hint: str = "") -> None:
    console.print(f"[bold red]error:[/] {message}" + (f"\n[dim]{hint}[/]" if hint else ""))
    raise typer.Exit(2)


@app.command()
def build(
    src: str = typer.Option(..., "--src", help="Source adapter: folder (every video under --input) or demo "
                                               "(clips the project makes itself, offline)."),
    out: Path = typer.Option(..., "--out", help="Output folder: shards/, manifest.json, samples.parquet, "
                                                "failures.parquet."),
    input_dir: Optional[Path] = typer.Option(None, "--input", help="Folder of videos for --src folder."),
    pipeline: Optional[Path] = typer.Option(None, "--pipeline", help="Pipeline YAML (default: pipelines/<src>.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override as dotted.key=value, repeatable, "
                                                          "e.g. --set facetrack.crop_size=256."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join a running Ray cluster "
                                                                          "(e.g. 10.0.0.1:6379); default: local."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Parallel workers (default: one per "
                                                                        "CPU; 0 runs in this process, no Ray)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any clip was dropped."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Process again the videos that have a row in "
                                                                    "failures.parquet (everything else is kept)."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard clips staged in OUT by an earlier run instead of "
                                                      "resuming (needed after changing the pipeline config)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log stage details (tracebacks of failed clips)."),
) -> None:
    """Turn talking-face videos into WebDataset shards: face crop, 16 kHz audio, landmarks, head pose, gaze.

    A build that is interrupted resumes when run again with the same command: finished videos are not redone.
    """
    from .build import build as run_build
    from .media import require_ffmpeg
    from .sources import source_specs

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    try:
        require_ffmpeg()
        cfg = load_config(pipeline or default_pipeline(src), overrides)
        specs, root = source_specs(src, input_dir, out)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err), "See `posetalk-data build --help`.")
    if not specs:
        fail(f"no videos found for --src {src}" + (f" under {input_dir}" if input_dir else ""),
             "Videos are found by suffix: .mp4 .mov .mkv .mpg .mpeg .webm .avi .m4v .flv .ts .wmv .3gp")
    console.print(f"{len(specs)} videos from source [bold]{src}[/] -> {out}")
    try:
        result = run_build(specs, out, cfg, source=src, root=root, workers=workers, address=ray_address,
                           fresh=fresh, retry_failed=retry_failed, console=console)
    except (FileNotFoundError, RuntimeError) as err:
        fail(str(err))
    print_summary(result)
    if strict and result.dropped:
        console.print(f"[bold red]--strict:[/] {result.dropped} clip(s) dropped")
        raise typer.Exit(1)


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
    table.add_row("throughput", f"{result.frames / max(result.seconds, 1e-6):.1f} frames/s")
    for stage, seconds in result.stage_seconds.items():
        table.add_row(f"  {stage} (worker time)", f"{seconds:.1f} s")
    console.print(table)


@app.command()
def report(
    manifest: Path = typer.Option(..., "--manifest", help="A build's manifest.json."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.html (default: beside the manifest)."),
    thumbnails: int = typer.Option(24, "--thumbnails", min=0, help="How many sample thumbnails to draw."),
) -> None:
    """Write report.html: counts, drop reasons, length/pose/gaze histograms, throughput, thumbnails."""
    from .report import write_report

    if not manifest.is_file():
        fail(f"manifest not found: {manifest}")
    path = write_report(out or manifest.parent, manifest_path=manifest, max_thumbnails=thumbnails)
    console.print(f"wrote {path}")


@app.command()
def version() -> None:
    """Print the versions a build would record in its manifest."""
    from .build import package_versions

    for name, value in package_versions().items():
        typer.echo(f"{name}: {value}")


if __name__ == "__main__":
    app()
