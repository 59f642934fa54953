"""posetalk-eval: one labelled evaluator for talking-head videos, PoseTalk's and anyone's.

  posetalk-eval --manifest test/manifest.json --generator runs/refine --out eval/ [--sync runs/sync]
  posetalk-eval --manifest test/manifest.json --videos other=results/other/ --out eval/

Self-reenactment: each test clip's first frame is the source, its own pose, gaze and speech drive it, and the result
is compared with the real frames. Rows: real (reference values), static (the first frame repeated: the floor), the
model, and each --videos folder (files <sample key>.mp4; a method whose video is missing or shorter than a clip is
marked incomplete and not averaged). Writes OUT/metrics.json, OUT/metrics.md and
OUT/strips/<key>.png (real | each row); OUT may be a store URL (s3://, gs://): the report is written locally and
uploaded when complete, metrics.json last. Metrics that need weights this machine lacks are listed as not computed,
with how to provide them; the others are computed anyway.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from posetalk_data import storage
from posetalk_data.cli_output import run_command

from posetalk_models.cli.common import check_device, check_manifest, fail, location, user_errors
from posetalk_models.run_paths import run_folder

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


REPORT = ("metrics.md", "metrics.json")      # uploaded after the strips, metrics.json last: a reader that finds it
                                            # finds the whole report


def check_report(out, inputs: dict, *, force: bool) -> None:
    """The output guard posetalk-generate has, for a report folder: never over or inside an input; unless --force,
    not in a training run's folder nor over files an earlier posetalk-eval did not write (its metrics.json says
    it wrote them)."""
    from posetalk_models.generate.outputs import check_outputs

    check_outputs([storage.join(out, name) for name in REPORT], storage.join(out, "metrics.json"), "posetalk-eval",
                  inputs, force=force, main=out)


def parse_videos(items: list[str]) -> dict[str, Path]:
    """NAME=DIR (or DIR, named after the folder) -> {name: folder}."""
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name, folder = (name, Path(folder)) if sep else (Path(item).name, Path(item))
        if not folder.is_dir():
            fail(f"--videos {item}: {folder} is not a folder")
        if name in ("real", "static", "model") or name in out:
            fail(f"--videos {item}: the row name {name!r} is taken; give NAME=DIR")
        out[name] = folder
    return out


@app.command()
def evaluate(
    manifest: str = typer.Option(..., "--manifest", help="The test clips (a build's or a split's manifest): a path "
                                                         "or a URL (s3://, gs://, file://)."),
    out: str = typer.Option(..., "--out", help="Folder for metrics.json, metrics.md and strips/: a path or a store "
                                               "URL (s3://, gs://)."),
    generator: str = typer.Option(None, "--generator", help="A video generator run to evaluate (coarse, refine or "
                                                            "enhance): a path or a URL (s3://, gs://, file://)."),
    videos: list[str] = typer.Option([], "--videos", help="NAME=DIR of another method's videos named <sample "
                                                          "key>.mp4 (repeatable)."),
    enhance: bool = typer.Option(False, "--enhance", help="Score the enhancer's frames (an enhance run)."),
    size: int = typer.Option(None, "--size", min=32, help="Evaluation size (default: the generator's, else 256)."),
    lpips_weights: str = typer.Option(None, "--lpips-weights", help="torchvision's alexnet-owt-7be5be79.pth (else "
                                                                    "the torch hub cache)."),
    syncnet_weights: str = typer.Option(None, "--syncnet-weights", help="syncnet_v2.model for LSE-D / LSE-C (else "
                                                                        "the torch hub cache)."),
    sync_run: str = typer.Option(None, "--sync", help="The posetalk lip-sync expert run (PS-D / PS-C): a path or a "
                                                      "URL."),
    max_clips: int = typer.Option(None, "--max-clips", min=1, help="Evaluate the first N clips only."),
    max_frames: int = typer.Option(None, "--max-frames", min=10, help="Evaluate each clip's first N frames only "
                                                                      "(clips under a second are measured too)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Write into a folder holding files an earlier posetalk-eval "
                                                      "did not write, or a training run's folder (never over an "
                                                      "input)."),
) -> None:
    """Score the rows on every test clip and write the labelled table."""
    from rich.console import Console

    from posetalk_models.evaluate.video import evaluate as run_evaluate

    console = Console(stderr=True)
    check_device(device)
    manifest, out = check_manifest(manifest), location(out)
    generator, sync_run = location(generator), location(sync_run)
    if generator is None and not videos:
        fail("nothing to evaluate: give --generator RUN and/or --videos NAME=DIR")
    videos = parse_videos(videos)
    with user_errors(), tempfile.TemporaryDirectory(prefix="posetalk_eval_") as staging:
        check_report(out, {"--manifest": manifest, "--generator": run_folder(generator), "--sync": run_folder(sync_run),
                           "--lpips-weights": lpips_weights, "--syncnet-weights": syncnet_weights,
                           **{f"--videos {name}": folder for name, folder in videos.items()}}, force=force)
        # a store's report is written here and uploaded when complete (a local one is written in place, as before)
        folder = Path(staging) if storage.is_url(out) else out
        result = run_evaluate(manifest, folder, generator=generator, videos=videos, size=size,
                              lpips_weights=lpips_weights, syncnet_weights=syncnet_weights, sync_run=sync_run,
                              limit=max_clips, max_frames=max_frames, enhance=enhance, device=device,
                              progress=lambda key: console.print(f"scored {key}"))
        table = (folder / "metrics.md").read_text()
        if storage.is_url(out):
            storage.put_folder(folder, out, last=REPORT)
    for name, why in result["not_computed"].items():
        console.print(f"[yellow]not computed[/] {name}: {why}", soft_wrap=True)
    for name, why in result["incomplete"].items():
        console.print(f"[yellow]incomplete[/] {name}: {'; '.join(why)} (not averaged)", soft_wrap=True)
    typer.echo(table)
    typer.echo(f"wrote {', '.join(str(storage.join(out, name)) for name in REPORT)}, {storage.join(out, 'strips')}/")


def entry() -> None:
    run_command(app)
