"""posetalk-train: train the PoseTalk models straight from posetalk shards (a manifest).

\b
Pose generation:
  posetalk-train vae --manifest train/manifest.json --out runs/vae
  posetalk-train pld --manifest train/manifest.json --vae runs/vae --out runs/pld
  posetalk-train eval --run runs/pld --manifest test/manifest.json

\b
Video generation (each stage over the frozen ones before it):
  posetalk-train coarse  --manifest train/manifest.json --out runs/coarse
  posetalk-train refine  --manifest train/manifest.json --coarse runs/coarse --out runs/refine
  posetalk-train enhance --manifest train/manifest.json --refine runs/refine --out runs/enhance
  posetalk-train sync    --manifest train/manifest.json --out runs/sync    (lip-sync expert, optional)
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from posetalk_data.cli_output import run_command
from posetalk_data.config import ConfigError

from posetalk_models.cli.common import check_manifest, fail, local_folder, location, user_errors

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)

MANIFEST = typer.Option(..., "--manifest", help="A build's manifest.json (or a filtered/split one): a path or a URL "
                                                "(s3://, gs://, file://).")
OUT = typer.Option(..., "--out", help="Run folder: step-*.safetensors + JSON sidecars, metrics.jsonl. "
                                      "An existing run resumes from its last checkpoint.")
CONFIG = typer.Option(None, "--config", help="Training config YAML (default: the shipped one, "
                                             "posetalk_models/train/configs/<pose|video>-<model>.yaml, at the size "
                                             "for real data).")
TINY = typer.Option(False, "--tiny", help="The built-in tiny config instead (64 px / small models; trains on a "
                                          "laptop CPU in minutes: for trying things out and for tests).")
SET = typer.Option([], "--set", help="Override a config key, e.g. --set loop.lr=3e-4 --set model.d_model=256.")
MAX_STEPS = typer.Option(None, "--max-steps", min=1, help="Training steps (overrides loop.max_steps).")
WORKERS = typer.Option(None, "--workers", min=0, help="DataLoader workers (overrides loop.num_workers).")
DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (overrides loop.device).")
VERIFY = typer.Option(False, "--verify", help="Check every shard of the manifest (and --holdout) in full first: "
                                               "sha256 and members, as `posetalk-data manifest verify` does. Without "
                                               "it only their sizes and sample counts are checked.")
HOLDOUT = typer.Option(None, "--holdout", help="Held-out manifest (a path or URL): L1, PSNR, SSIM, lip-region L1 and "
                                               "lip_share of every stage and of the copy-source baseline, at every "
                                               "checkpoint.")


@app.callback()
def main() -> None:
    """Trainers read the shards of a `posetalk-data build` directly; GPU and mixed precision when present,
    DDP when launched with torchrun. Each has a tiny default config that trains on a CPU, and a shipped YAML
    at the size for real data (posetalk_models/train/configs/<model>.yaml)."""


def _config(kind: str, config: Path | None, overrides: list[str], max_steps, workers, device, tiny: bool = False):
    from posetalk_models.train.config import load_train_config, shipped

    if tiny and config:
        fail("--tiny and --config are two different configs: give one")
    extra = [f"loop.{k}={v}" for k, v in (("max_steps", max_steps), ("num_workers", workers), ("device", device))
             if v is not None]
    try:
        return load_train_config(kind, None if tiny else config or shipped(kind), [*overrides, *extra])
    except ConfigError as err:
        fail(str(err))


def _train(kind: str, train, manifest: str, out: str, config: Path | None, overrides: list[str], max_steps,
           workers, device, tiny: bool, verify: bool, **kwargs) -> None:
    """What every trainer command does: check the manifest, load the config, lock the run folder, train, print the
    last checkpoint. Manifests may be paths or URLs; the run folder is local."""
    from posetalk_models.lock import run_lock

    manifest, out = check_manifest(manifest), local_folder(out, "--out")
    if kwargs.get("holdout") is not None:
        kwargs["holdout"] = check_manifest(kwargs["holdout"], "--holdout")
    cfg = _config(kind, config, overrides, max_steps, workers, device, tiny)
    with user_errors():
        if verify:
            for data in (manifest, kwargs.get("holdout")):
                _verify(data)
        with run_lock(out):
            typer.echo(train(manifest, out, cfg, **kwargs))


def _verify(manifest) -> None:
    """--verify: refuse a manifest whose shards differ from it in any way `posetalk-data manifest verify` finds."""
    from posetalk_data.verify import verify

    problems = verify(manifest) if manifest else []
    if problems:
        first = problems[0]
        raise ValueError(f"--verify: {manifest} has {len(problems)} problem(s), the first in "
                         f"{first.shard or 'its samples table'}{' ' + first.key if first.key else ''}: {first.what}, "
                         f"{first.detail} (`posetalk-data manifest verify {manifest}` lists them all)")


@app.command()
def vae(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
        max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
        verify: bool = VERIFY,
        holdout: str = typer.Option(None, "--holdout", help="Held-out manifest: reconstruction error in degrees "
                                                             "logged at every checkpoint.")) -> None:
    """Train the pose VAE (transformer encoder/decoder over pose+gaze windows, Huber reconstruction + KL)."""
    from posetalk_models.train.pose_vae import train_vae

    _train("vae", train_vae, manifest, out, config, set_, max_steps, workers, device, tiny, verify, holdout=holdout)


@app.command()
def pld(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
        max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
        verify: bool = VERIFY,
        vae_run: Path = typer.Option(None, "--vae", help="The trained pose VAE run (needed for a new run; "
                                                         "its weights are copied into OUT).")) -> None:
    """Train the Pose Latent Diffusion model in a frozen VAE's latent space, conditioned on text and speech."""
    from posetalk_models.train.pose_pld import train_pld

    _train("pld", train_pld, manifest, out, config, set_, max_steps, workers, device, tiny, verify, vae_run=vae_run)


@app.command()
def coarse(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
           max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
           verify: bool = VERIFY, holdout: str = HOLDOUT) -> None:
    """Train CoarseNet: the source frame animated into each target frame's head pose, gaze and coarse mouth
    (motion encoder -> AdaIN U-Net flow -> warp -> editing net). The size is the config's (tiny: 64 px on a CPU;
    the shipped YAML: 256 px)."""
    from posetalk_models.train.coarse import train_coarse

    _train("coarse", train_coarse, manifest, out, config, set_, max_steps, workers, device, tiny, verify,
           holdout=holdout)


@app.command()
def refine(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
           max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
           verify: bool = VERIFY, holdout: str = HOLDOUT,
           coarse_run: Path = typer.Option(None, "--coarse", help="The trained CoarseNet run (needed for a new run; "
                                                                  "copied into OUT and kept frozen)."),
           sync_run: Path = typer.Option(None, "--sync", help="A trained lip-sync expert run, for loss.sync > 0 "
                                                              "(with data.targets = its frames).")) -> None:
    """Train RefineNet over a frozen CoarseNet: finer lip motion, coarse-to-fine flows from 8 px up, with the L1
    weighted up on the lips."""
    from posetalk_models.train.refine import train_refine

    _train("refine", train_refine, manifest, out, config, set_, max_steps, workers, device, tiny, verify,
           coarse_run=coarse_run, holdout=holdout, sync_run=sync_run)


@app.command()
def enhance(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
            max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
            verify: bool = VERIFY, holdout: str = HOLDOUT,
            refine_run: Path = typer.Option(None, "--refine", help="The trained RefineNet run (needed for a new "
                                                                   "run; it and its CoarseNet are copied into OUT).")
            ) -> None:
    """Train the portrait enhancer over frozen CoarseNet + RefineNet: the refined frame and the source frame ->
    the final frame (loss.gan > 0 adds a patch discriminator)."""
    from posetalk_models.train.enhance import train_enhance

    _train("enhance", train_enhance, manifest, out, config, set_, max_steps, workers, device, tiny, verify,
           refine_run=refine_run, holdout=holdout)


@app.command()
def sync(manifest: str = MANIFEST, out: str = OUT, config: Path = CONFIG, set_: list[str] = SET,
         max_steps: int = MAX_STEPS, workers: int = WORKERS, device: str = DEVICE, tiny: bool = TINY,
         verify: bool = VERIFY,
         holdout: str = typer.Option(None, "--holdout", help="Held-out manifest: sync accuracy at every "
                                                              "checkpoint.")) -> None:
    """Train the project's lip-sync expert (Wav2Lip-style: mouth crops vs speech features, in sync or not). Its
    frozen judgement is RefineNet's optional sync loss and the evaluator's own lip-sync score."""
    from posetalk_models.train.sync import train_sync

    _train("sync", train_sync, manifest, out, config, set_, max_steps, workers, device, tiny, verify, holdout=holdout)


EVAL_COMMAND = "posetalk-train eval"


@app.command("eval")
def evaluate(run: str = typer.Option(..., "--run", help="A PLD run folder: a path or a URL (s3://, gs://, "
                                                      "file://)."), manifest: str = MANIFEST,
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
             out: str = typer.Option(None, "--out", help="Also write the figures to this JSON file (a path or a "
                                                         "store URL)."),
             force: bool = typer.Option(False, "--force", help="Replace an --out file that an earlier "
                                                               "`posetalk-train eval` did not write.")) -> None:
    """VAE reconstruction error (deg), diversity and Fréchet distance in the VAE encoder space for audio-only,
    text-only and text+audio generation on held-out clips, and text control ("nods" vs "keeps still", "turns
    left" vs "turns right"; positive scores: the model follows the text)."""
    from posetalk_data import storage
    from posetalk_models.evaluate.pose import evaluate_run
    from posetalk_models.generate.outputs import check_outputs

    from posetalk_models.train.loop import pick_device

    manifest, run, out = check_manifest(manifest), location(run), location(out)
    with user_errors():
        pick_device(device)     # a GPU asked for and not there: one line before anything loads
        if out:     # before the minutes of sampling: never over an input or another command's file
            check_outputs([out], out, EVAL_COMMAND, {"--run": run, "--manifest": manifest}, force=force)
        figures = evaluate_run(run, manifest, windows=windows, samples=samples, steps=steps, guidance=guidance,
                               seed=seed, device=device, text_weights=text_weights)
        text = json.dumps({"command": EVAL_COMMAND, **figures}, indent=1)   # the mark a later run's guard reads
        if out:
            storage.write_atomic(out, text + "\n")     # one rename, or one PUT to a store
    typer.echo(text)


def entry() -> None:
    run_command(app)
