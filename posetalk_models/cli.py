"""posetalk-train: train the PoseTalk models straight from posetalk shards (a manifest)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Trainers read the shards of a `posetalk-data build` directly; GPU and mixed precision when present."""


@app.command()
def vae(
    manifest: Path = typer.Option(..., "--manifest", help="A build's manifest.json."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints (safetensors + JSON), metrics.jsonl. "
                                                "An existing run resumes from its last checkpoint."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Training steps (default: the config's)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1),
    lr: float = typer.Option(None, "--lr"),
    window: int = typer.Option(None, "--window", min=2, help="Frames per training window."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader workers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Train the pose VAE (transformer encoder/decoder over pose+gaze windows, Huber reconstruction + KL)."""
    from .train_vae import TrainVAEConfig, train_vae

    if not manifest.is_file():
        typer.echo(f"error: manifest not found: {manifest}", err=True)
        raise typer.Exit(2)
    cfg = TrainVAEConfig(num_workers=workers, device=device)
    changes = {k: v for k, v in {"max_steps": max_steps, "batch_size": batch_size, "lr": lr}.items() if v is not None}
    if window is not None:
        changes["data"] = dataclasses.replace(cfg.data, window=window)
    typer.echo(train_vae(manifest, out, dataclasses.replace(cfg, **changes)))
