"""posetalk-eval: one labelled evaluator for talking-head videos, PoseTalk's and anyone's.

  posetalk-eval --manifest test/manifest.json --generator runs/refine --out eval/ [--sync runs/sync]
  posetalk-eval --manifest test/manifest.json --videos other=results/other/ --out eval/

Self-reenactment: each test clip's first frame is the source, its own pose, gaze and speech drive it, and the result
is compared with the real frames. Rows: real (reference values), static (the first frame repeated: the floor), the
model, and each --videos folder (files <sample key>.mp4; a method whose video is missing or shorter than a clip is
marked incomplete and not averaged). Writes OUT/metrics.json, OUT/metrics.md and
OUT/strips/<key>.png (real | each row). Metrics that need weights this machine lacks are listed as not computed,
with how to provide them; the others are computed anyway.
"""
from __future__ import annotations

from pathlib import Path

import typer

from posetalk_models.cli.common import check_device, check_manifest, fail, local_folder, user_errors

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


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
    out: str = typer.Option(..., "--out", help="Folder for metrics.json, metrics.md and strips/ (on this disk)."),
    generator: Path = typer.Option(None, "--generator", help="A video generator run to evaluate (coarse, refine or "
                                                             "enhance)."),
    videos: list[str] = typer.Option([], "--videos", help="NAME=DIR of another method's videos named <sample "
                                                          "key>.mp4 (repeatable)."),
    enhance: bool = typer.Option(False, "--enhance", help="Score the enhancer's frames (an enhance run)."),
    size: int = typer.Option(None, "--size", min=32, help="Evaluation size (default: the generator's, else 256)."),
    lpips_weights: str = typer.Option(None, "--lpips-weights", help="torchvision's alexnet-owt-7be5be79.pth (else "
                                                                    "the torch hub cache)."),
    syncnet_weights: str = typer.Option(None, "--syncnet-weights", help="syncnet_v2.model for LSE-D / LSE-C (else "
                                                                        "the torch hub cache)."),
    sync_run: Path = typer.Option(None, "--sync", help="The posetalk lip-sync expert run (PS-D / PS-C)."),
    max_clips: int = typer.Option(None, "--max-clips", min=1, help="Evaluate the first N clips only."),
    max_frames: int = typer.Option(None, "--max-frames", min=10, help="Evaluate each clip's first N frames only "
                                                                      "(clips under a second are measured too)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Score the rows on every test clip and write the labelled table."""
    from rich.console import Console

    from posetalk_models.evaluate.video import evaluate as run_evaluate

    console = Console(stderr=True)
    check_device(device)
    manifest, out = check_manifest(manifest), local_folder(out, "--out")
    if generator is None and not videos:
        fail("nothing to evaluate: give --generator RUN and/or --videos NAME=DIR")
    with user_errors():
        result = run_evaluate(manifest, out, generator=generator, videos=parse_videos(videos), size=size,
                              lpips_weights=lpips_weights, syncnet_weights=syncnet_weights, sync_run=sync_run,
                              limit=max_clips, max_frames=max_frames, enhance=enhance, device=device,
                              progress=lambda key: console.print(f"scored {key}"))
    for name, why in result["not_computed"].items():
        console.print(f"[yellow]not computed[/] {name}: {why}", soft_wrap=True)
    for name, why in result["incomplete"].items():
        console.print(f"[yellow]incomplete[/] {name}: {'; '.join(why)} (not averaged)", soft_wrap=True)
    typer.echo((out / "metrics.md").read_text())
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'strips'}/")
