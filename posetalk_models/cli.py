"""posetalk-train: train the PoseTalk pose models straight from posetalk shards (a manifest).

  posetalk-train vae --manifest train/manifest.json --out runs/vae
  posetalk-train pld --manifest train/manifest.json --vae runs/vae --out runs/pld
  posetalk-train eval --run runs/pld --manifest test/manifest.json
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from posetalk_data.config import ConfigError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
MANIFEST = typer.Option(..., "--manifest", help="A build's manifest.json (or a filtered/split one).")
OUT = typer.Option(..., "--out", help="Run folder: step-*.safetensors + JSON sidecars, metrics.jsonl. "
                                      "An existing run resumes from its last checkpoint.")
CONFIG = typer.Option(None, "--config", help="Training config YAML (default: pipelines/pose-<model>.yaml).")
SET = typer.Option([], "--set", help="Override a config key, e.g. --set loop.lr=3e-4 --set model.d_model=256.")
MAX_STEPS = typer.Option(None, "--max-steps", min=1, help="Training steps (overrides loop.max_steps).")
WORKERS = typer.Option(None, "--workers", min=0, help="DataLoader workers (overrides loop.num_workers).")
DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (overrides loop.device).")


@app.callback()
def main() -> None:
    """Trainers read the shards of a `posetalk-data build` directly; GPU and mixed precision when present,
    DDP when launched with torchrun."""


def _fail(message: str) -> None:
    """An expected problem (bad input, missing weights): one line on stderr, exit code 2, no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _config(kind: str, config: Path | None, overrides: list[str], max_steps, workers, device):
    from .config import load_train_config

    path = config or PIPELINES / f"pose-{kind}.yaml"
    extra = [f"loop.{k}={v}" for k, v in (("max_steps", max_steps), ("num_workers", workers), ("device", device))
             if v is not None]
    try:
        return load_train_config(kind, path if path.exists() or config else None, [*overrides, *extra])
    except ConfigError as err:
        _fail(str(err))


def _check_manifest(manifest: Path) -> None:
    if not manifest.is_file():
        _fail(f"manifest not found: {manifest}")


@app.command()
def vae(manifest: Path = MANIFEST, out: Path = OUT, config: Path = CONFIG, set_: list[str] = SET,
        max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE,
        holdout: Path = typer.Option(None, "--holdout", help="Held-out manifest: reconstruction error in degrees "
                                                             "logged at every checkpoint.")) -> None:
    """Train the pose VAE (transformer encoder/decoder over pose+gaze windows, Huber reconstruction + KL)."""
    from .train_vae import train_vae

    _check_manifest(manifest)
    cfg = _config("vae", config, set_, max_steps, workers, device)
    typer.echo(train_vae(manifest, out, cfg, holdout=holdout))


@app.command()
def pld(manifest: Path = MANIFEST, out: Path = OUT, config: Path = CONFIG, set_: list[str] = SET,
        max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE,
        vae_run: Path = typer.Option(None, "--vae", help="The trained pose VAE run (needed for a new run; "
                                                         "its weights are copied into OUT).")) -> None:
    """Train the Pose Latent Diffusion model in a frozen VAE's latent space, conditioned on text and speech."""
    from .train_pld import train_pld

    _check_manifest(manifest)
    cfg = _config("pld", config, set_, max_steps, workers, device)
    try:
        typer.echo(train_pld(manifest, out, cfg, vae_run=vae_run))
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))


@app.command("eval")
def evaluate(run: Path = typer.Option(..., "--run", help="A PLD run folder."), manifest: Path = MANIFEST,
             windows: int = typer.Option(64, "--windows", min=2, help="Real windows to compare against (one pass "
                                                                       "over the manifest caps it)."),
             samples: int = typer.Option(4, "--samples", min=2, help="Samples per window (diversity across "
                                                                     "samples)."),
             steps: int = typer.Option(50, "--steps", min=1, help="DDIM steps."),
             guidance: float = typer.Option(2.0, "--guidance", min=0.0),
             seed: int = typer.Option(0, "--seed"),
             device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
             text_weights: str = typer.Option(None, "--text-weights", help="The run's text encoder weights, if not "
                                                                           "in its package or cache."),
             out: Path = typer.Option(None, "--out", help="Also write the figures to this JSON file.")) -> None:
    """VAE reconstruction error (deg), diversity and Fréchet distance in the VAE encoder space for audio-only,
    text-only and text+audio generation on held-out clips, and text control ("nods" vs "keeps still", "turns
    left" vs "turns right"; positive scores: the model follows the text)."""
    from posetalk_data.weights import WeightsMissing

    from .generate import FeatureMismatch
    from .metrics import evaluate_run

    _check_manifest(manifest)
    try:
        figures = evaluate_run(run, manifest, windows=windows, samples=samples, steps=steps, guidance=guidance,
                               seed=seed, device=device, text_weights=text_weights)
    except (FeatureMismatch, WeightsMissing, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    text = json.dumps(figures, indent=1)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)
