"""posetalk-pose: generate head pose and gaze sequences with a trained Pose Latent Diffusion run.

  posetalk-pose generate --run runs/pld --audio speech.wav --text "nods slowly while talking" --out poses.npy
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from .cli import _fail, user_errors

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


@app.callback()
def main() -> None:
    """Pose generation from speech and/or a motion prompt (the paper's audio-only, text-only and text+audio)."""


@app.command()
def generate(
    run: Path = typer.Option(..., "--run", help="PLD run folder (from `posetalk-train pld`)."),
    audio: Path = typer.Option(..., "--audio", help="Speech: any audio or video file ffmpeg reads; sets the "
                                                    "length (25 fps)."),
    text: str = typer.Option(None, "--text", help='Motion prompt, e.g. "turns left, then nods".'),
    mode: str = typer.Option(None, "--mode", help="audio, text or both (default: both with --text, else audio)."),
    guidance: float = typer.Option(2.0, "--guidance", min=0.0, help="Classifier-free guidance; 0 = none."),
    steps: int = typer.Option(50, "--steps", min=1, help="DDIM steps."),
    overlap: int = typer.Option(None, "--overlap", min=0, help="Frames shared by neighbouring windows "
                                                               "(default: half a window)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="poses.npy: (frames, channels) float32 (.npy is added if missing); "
                                                "a .json with the channel names and settings and a .png plot are "
                                                "written beside it."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write the yaw/pitch/roll and gaze plot."),
    speech_weights: str = typer.Option(None, "--speech-weights", help="Folder of the speech model the run was "
                                                                      "trained with (else the HF cache)."),
    text_weights: str = typer.Option(None, "--text-weights", help="File/folder of the text encoder the run was "
                                                                  "trained with (else its package or cache)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Generate a pose+gaze sequence as long as the audio; features are computed with the run's recorded
    extractors and a mismatch is refused."""
    from .data import CHANNELS
    from .generate import audio_samples, conditions, frames_of, generate_poses, plot_poses
    from .train_pld import load_pld

    mode = mode or ("both" if text else "audio")
    if mode not in ("audio", "text", "both"):
        _fail(f"--mode {mode}: choose audio, text or both")
    if mode in ("text", "both") and not text:
        _fail(f"mode {mode} needs --text")
    if not audio.is_file():
        _fail(f"--audio {audio}: no such file")
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")   # what np.save would write anyway
    with user_errors():
        pld, vae, sidecar = load_pld(run, device=device)
        samples = audio_samples(audio)
        speech, emb, n = conditions(sidecar, None if mode == "text" else samples, text, n_frames=frames_of(samples),
                                    speech_weights=speech_weights, text_weights=text_weights)
        if mode in ("audio", "both") and speech is None:
            _fail("this run was trained without speech features: use --mode text")
        if mode in ("text", "both") and emb is None:
            _fail("this run was trained without text features: use --mode audio")
        poses = generate_poses(pld, vae, sidecar["stats"], n, speech, emb, mode=mode, guidance=guidance,
                               steps=steps, overlap=overlap, seed=seed)[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, poses.astype(np.float32))
    info = {"channels": list(CHANNELS[:poses.shape[1]]), "fps": 25, "frames": int(n), "mode": mode, "text": text,
            "audio": str(audio), "guidance": guidance, "steps": steps, "seed": seed, "run": str(run),
            "checkpoint_step": sidecar["step"],
            "units": "degrees; dx, dy in face scales and dlog_s relative to the first frame"}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    typer.echo(f"{out}: {n} frames ({n / 25:.1f} s), mode {mode}, guidance {guidance}")
    if plot:
        typer.echo(plot_poses(poses, out.with_suffix(".png"), f"{mode}: {text or audio.name}"))
