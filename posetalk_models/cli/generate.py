"""posetalk-generate: a talking-head video from one portrait and speech, in PoseTalk's three pose modes.

  posetalk-generate --image portrait.jpg --audio speech.wav --generator runs/refine --out talk.mp4     # fixed pose
  posetalk-generate ... --pose-from reference.mp4 --out talk.mp4                                     # a video's pose
  posetalk-generate ... --pld runs/pld --prompt "nods, then turns left" --seed 3 --out talk.mp4     # generated pose

posetalk-pose generate (the same module) writes the PLD's pose+gaze sequence alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import typer

from posetalk_data import storage
from posetalk_data.cli_output import run_command
from posetalk_data.shards import sha256_file

from posetalk_models.cli.common import check_device, fail, input_file, loading_run, location, user_errors
from posetalk_models.run_paths import run_folder

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
pose_app = typer.Typer(help="posetalk-pose: head pose and gaze sequences from a trained Pose Latent Diffusion run.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None)

AUDIO = typer.Option(..., "--audio", help="Speech: any audio or video file ffmpeg reads; sets the length (25 fps).")
GUIDANCE = typer.Option(2.0, "--guidance", min=0.0, help="PLD classifier-free guidance; 0 = none.")
STEPS = typer.Option(50, "--steps", min=1, help="PLD DDIM steps.")
OVERLAP = typer.Option(None, "--overlap", min=0, help="Frames shared by neighbouring PLD windows (default: half).")
SEED = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="The same seed gives the same generated pose.")
SPEECH_WEIGHTS = typer.Option(None, "--speech-weights", help="Folder of the speech model the runs were trained with "
                                                            "(else the HF cache).")
TEXT_WEIGHTS = typer.Option(None, "--text-weights", help="File/folder of the PLD run's text encoder (else its "
                                                        "package or cache).")
DEVICE = typer.Option("cpu", "--device", help="cpu or cuda.")
RUN_URL = "a path or a URL (s3://, gs://, file://; fetched into the cache, see README)"
FORCE = typer.Option(False, "--force", help="Replace files at --out that this command did not write, or write into "
                                            "a training run's folder (never over an input).")


def load_pld_run(run: "str | Path", flag: str, device: str):
    """(PLD, its VAE, sidecar) of a PLD run; a run that fails to load is one line naming the flag and run."""
    from posetalk_models.generate.pose import load_pld

    with loading_run(run, flag):
        return load_pld(run, device=device)


def speech_of(audio: Path) -> tuple[np.ndarray, int]:
    """(16 kHz samples, frames at 25 fps = round(duration x 25)) of any file ffmpeg reads."""
    from posetalk_models.generate.pose import audio_samples, frames_of

    if not audio.is_file():
        fail(f"--audio {audio}: no such file")
    samples = audio_samples(audio)
    return samples, frames_of(samples)


@app.command()
def generate(
    image: Path = typer.Option(..., "--image", help="The portrait (a photo or painting with one face)."),
    audio: Path = AUDIO,
    generator: str = typer.Option(..., "--generator", help="A video generator run (posetalk-train coarse, refine "
                                                           f"or enhance); every stage up to it is used: {RUN_URL}."),
    pose_from: str = typer.Option(None, "--pose-from", help="Reference mode: copy this video's head pose and gaze "
                                                            "(relative to the portrait's; looped or cut); a path or "
                                                            "a URL (s3://, gs://, file://)."),
    pld: str = typer.Option(None, "--pld", help="Generated mode: a PLD run (posetalk-train pld) generates the pose "
                                                f"from the speech and --prompt: {RUN_URL}."),
    prompt: str = typer.Option(None, "--prompt", help='Generated mode: a motion prompt, e.g. "nods slowly".'),
    mode: str = typer.Option(None, "--mode", help="The PLD's conditions: audio, text or both (default: both with "
                                                  "--prompt, else audio)."),
    natural_motion: float = typer.Option(0.0, "--natural-motion", min=0.0, help="Fixed mode: add slow natural "
                                                                                 "head motion of this std (deg)."),
    enhance: bool = typer.Option(False, "--enhance", help="Also run the portrait enhancer (needs an enhance run)."),
    seed: int = SEED, guidance: float = GUIDANCE, steps: int = STEPS, overlap: int = OVERLAP,
    speech_weights: str = SPEECH_WEIGHTS, text_weights: str = TEXT_WEIGHTS, device: str = DEVICE, force: bool = FORCE,
    out: str = typer.Option(..., "--out", help="OUT.mp4 (H.264, 25 fps, the audio muxed in); OUT.npy (the pose "
                                               "and gaze used, frames x 10) and OUT.json (runs, weights hashes, "
                                               "settings) beside it; a path or a store URL (s3://, gs://)."),
) -> None:
    """A talking-head video of the portrait saying the audio: exactly round(duration x 25) frames, lip motion from
    the speech, head pose and gaze fixed (default), from --pose-from, or generated with --pld [--prompt]."""
    from posetalk_models.generate import drive
    from posetalk_models.data.windows import CHANNELS
    from posetalk_models.generate.faces import extraction_config, face_tracks, image_frame, portrait
    from posetalk_models.generate.pose import pld_poses, pose_mode, run_speech_backend
    from posetalk_models.generate.talk import load_generator
    from posetalk_models.generate.outputs import check_outputs, published

    # everything that can be checked without the models is checked first: paths, kinds, the device, the image
    if pose_from and pld:
        fail("--pose-from and --pld are two pose modes: give one")
    if prompt and not pld:
        fail("--prompt needs --pld RUN (the pose generator)")
    out, generator, pld = location(out), location(generator), location(pld)
    if os.path.splitext(storage.name(out))[1].lower() != ".mp4":
        fail(f"--out {out}: the video is an .mp4 file")
    for path, flag in ((image, "--image"), (audio, "--audio")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: no such file")
    pose_from = input_file(pose_from, "--pose-from")
    check_device(device)
    with user_errors():
        mode = pose_mode(prompt, mode) if pld else None
    mode_name = "reference" if pose_from else "generated" if pld else "fixed"
    outputs = [out, storage.with_suffix(out, ".npy"), storage.with_suffix(out, ".json")]
    with user_errors():
        check_outputs(outputs, outputs[-1], "posetalk-generate", {
            "--image": image, "--audio": audio, "--pose-from": pose_from, "--generator": run_folder(generator),
            "--pld": run_folder(pld), "--speech-weights": speech_weights and Path(speech_weights),
            "--text-weights": text_weights and Path(text_weights)}, force=force)
        image_frame(image)                       # readable, not too large: before any model is loaded
        samples, n = speech_of(audio)
        if n < 1:
            fail(f"--audio {audio}: shorter than one video frame (40 ms)")
        with loading_run(generator, "--generator"):
            gen = load_generator(generator, device=device)
        cascade, sidecar = gen.cascade, gen.sidecar
        stage = cascade.output_stage(enhance, generator)      # an --enhance without an enhancer: refused here
        face = portrait(image, sidecar.get("pipeline"))
        info = {"command": "posetalk-generate", "mode": mode_name, "audio": str(audio), "image": str(image),
                "frames": n, "fps": 25, "seed": seed, "channels": list(CHANNELS),
                "portrait_pose": face.angles()[0].round(3).tolist()}
        if pose_from:
            with storage.local_copy(pose_from) as video:      # a store's video is read from a download
                track = face_tracks(video, extraction_config(sidecar.get("pipeline"), single_face=False))[0]
            motion = drive.reference(face, track, n)
            info["reference"] = {"video": str(pose_from), "frames": len(track.frames)}
        elif pld:
            pld_net, vae, pld_sidecar = load_pld_run(pld, "--pld", device)
            poses = pld_poses(pld_net, vae, pld_sidecar, samples, n, prompt, mode, guidance=guidance, steps=steps,
                              overlap=overlap, seed=seed, speech_weights=speech_weights, text_weights=text_weights)
            motion = drive.generated(face, poses)
            info["pld"] = {"run": str(pld), "step": pld_sidecar["step"], "mode": mode, "prompt": prompt,
                           "guidance": guidance, "steps": steps}
        else:
            motion = drive.fixed(face, n, natural_deg=natural_motion, seed=seed)
            info["natural_motion_deg"] = natural_motion
        data = sidecar["config"]["data"]
        speech = None
        if data.get("speech"):
            speech = run_speech_backend(sidecar, speech_weights).features(samples, n).astype(np.float32)
        info["generator"] = {"run": str(generator), "kind": sidecar["kind"], "step": sidecar["step"], "stage": stage,
                             "size": cascade.size,
                             "sha256": {p.name: sha256_file(p) for p in cascade.weight_files}}
        with published(outputs) as temp:
            write_outputs(gen, face, motion, speech, enhance, audio, temp[out])
            np.save(temp[outputs[1]], motion)
            temp[outputs[2]].write_text(json.dumps(info, indent=1) + "\n")
    typer.echo(f"{out}: {n} frames ({n / 25:.2f} s), {mode_name} pose, {stage} stage, {cascade.size} px")


def write_outputs(generator, face, motion: np.ndarray, speech: np.ndarray | None, enhance: bool, audio: Path,
                  video: Path) -> None:
    """Render every frame (with a progress bar) and encode them with the audio into `video`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from posetalk_models.generate.render import write_video
    from posetalk_models.generate.talk import talk

    with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("frames", total=len(motion))
        result = talk(face.frames[0], face.angles()[0], motion, speech, generator, enhance=enhance,
                      progress=lambda k: bar.advance(task, k))
    write_video(result.frames, video, audio)


@pose_app.callback()
def pose_main() -> None:
    """Pose generation from speech and/or a motion prompt (the paper's audio-only, text-only and text+audio)."""


@pose_app.command("generate")
def pose_generate(
    run: str = typer.Option(..., "--run", help=f"PLD run folder (from `posetalk-train pld`): {RUN_URL}."),
    audio: Path = AUDIO,
    text: str = typer.Option(None, "--text", help='Motion prompt, e.g. "turns left, then nods".'),
    mode: str = typer.Option(None, "--mode", help="audio, text or both (default: both with --text, else audio)."),
    guidance: float = GUIDANCE, steps: int = STEPS, overlap: int = OVERLAP, seed: int = SEED,
    out: str = typer.Option(..., "--out", help="poses.npy: (frames, channels) float32 (.npy is added if missing); "
                                               "a .json with the channel names and settings and a .png plot are "
                                               "written beside it; a path or a store URL (s3://, gs://)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write the yaw/pitch/roll and gaze plot."),
    speech_weights: str = SPEECH_WEIGHTS, text_weights: str = TEXT_WEIGHTS, device: str = DEVICE, force: bool = FORCE,
) -> None:
    """Generate a pose+gaze sequence as long as the audio; features are computed with the run's recorded
    extractors and a mismatch is refused."""
    from posetalk_models.data.windows import CHANNELS
    from posetalk_models.generate.pose import plot_poses, pld_poses, pose_mode
    from posetalk_models.generate.outputs import check_outputs, published

    with user_errors():
        mode = pose_mode(text, mode)
    check_device(device)
    out, run = location(out), location(run)
    if not storage.name(out).endswith(".npy"):           # what np.save would write anyway
        out = storage.join(storage.parent(out), storage.name(out) + ".npy")
    png, record = storage.with_suffix(out, ".png"), storage.with_suffix(out, ".json")
    outputs = [out, *([png] if plot else []), record]
    with user_errors():
        check_outputs(outputs, outputs[-1], "posetalk-pose generate", {
            "--run": run_folder(run), "--audio": audio, "--speech-weights": speech_weights and Path(speech_weights),
            "--text-weights": text_weights and Path(text_weights)}, force=force)
        samples, n = speech_of(audio)
        pld, vae, sidecar = load_pld_run(run, "--run", device)
        poses = pld_poses(pld, vae, sidecar, samples, n, text, mode, guidance=guidance, steps=steps, overlap=overlap,
                          seed=seed, speech_weights=speech_weights, text_weights=text_weights)
        info = {"command": "posetalk-pose generate", "channels": list(CHANNELS[:poses.shape[1]]), "fps": 25,
                "frames": int(len(poses)), "mode": mode, "text": text, "audio": str(audio), "guidance": guidance,
                "steps": steps, "seed": seed, "run": str(run), "checkpoint_step": sidecar["step"],
                "units": "degrees; dx, dy in face scales and dlog_s relative to the first frame"}
        with published(outputs) as temp:
            np.save(temp[out], poses.astype(np.float32))
            if plot:
                plot_poses(poses, temp[png], f"{mode}: {text or audio.name}")
            temp[record].write_text(json.dumps(info, indent=1) + "\n")
    typer.echo(f"{out}: {len(poses)} frames ({len(poses) / 25:.1f} s), mode {mode}, guidance {guidance}")
    if plot:
        typer.echo(png)


def entry() -> None:
    run_command(app)


def pose_entry() -> None:
    run_command(pose_app)
