"""posetalk-generate, posetalk-pose generate and posetalk-eval given hostile or careless input (issue 21): each case
through the CLI, with its exit code, its one-line message, and the inputs and earlier outputs hashed before and
after. The tiny generator runs of the session fixtures; 1 s of speech keeps the renders short."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def generate(*args):
    from posetalk_models.cli.generate import app

    return run(app, *args)


def pose(*args):
    from posetalk_models.cli.generate import pose_app

    return run(pose_app, "generate", *args)


def evaluate(*args):
    from posetalk_models.cli.eval import app

    return run(app, *args)


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (files or folders)."""
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def refused(result, *words: str) -> None:
    """Exit code 2, no traceback, and the output ends with one error line that says `words` (a progress bar may
    come before it)."""
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower() or "Traceback" in line]
    assert result.exit_code == 2 and errors == lines[-1:] and lines[-1].startswith("error: "), result.output
    assert all(w in lines[-1] for w in words), result.output


@pytest.fixture(scope="module")
def media(samples, tmp_path_factory) -> dict[str, Path]:
    """1 s of speech, the portrait, a reference video, each a copy this module may try to break."""
    root = tmp_path_factory.mktemp("hostile_media")
    speech = root / "speech.wav"
    subprocess.run([*FFMPEG, "-i", str(samples / "audio" / "hallo_1.wav"), "-t", "1", str(speech)], check=True)
    image = shutil.copy(samples / "images" / "liveportrait_d19.jpg", root / "portrait.jpg")
    reference = root / "reference.mp4"
    subprocess.run([*FFMPEG, "-i", str(samples / "videos" / "liveportrait_d20.mp4"), "-t", "1.2", "-c", "copy",
                    str(reference)], check=True)
    return {"audio": speech, "image": Path(image), "reference": reference}


@pytest.fixture(scope="module")
def earlier(video_runs, media, tmp_path_factory) -> Path:
    """A good earlier output of posetalk-generate (mp4, npy, json), for the tests that must leave it alone."""
    out = tmp_path_factory.mktemp("earlier") / "talk.mp4"
    result = generate("--image", media["image"], "--audio", media["audio"], "--generator", video_runs / "coarse",
                      "--out", out)
    assert result.exit_code == 0, result.output
    return out


def copy_of(earlier: Path, folder: Path) -> Path:
    for suffix in (".mp4", ".npy", ".json"):
        shutil.copy(earlier.with_suffix(suffix), folder / f"talk{suffix}")
    return folder / "talk.mp4"


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".partial" in p.name]


# ------------------------------------------------------------------ portraits ffmpeg cannot read (hung before)
def huge_png_header(path: Path, side: int) -> Path:
    """A PNG whose header says side x side pixels (its CRC correct), with a tiny image behind it."""
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(png.tobytes())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.timeout(120, func_only=True)
def test_portraits_that_cannot_be_decoded_are_refused_at_once(video_runs, media, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n")                              # 6 bytes: ffmpeg -loop 1 spun for ever
    huge = huge_png_header(tmp_path / "huge.png", 30000)              # refused before decoding
    for image, words in ((broken, ["not an image that can be read"]), (huge, ["30000x30000 pixels", "downscale"])):
        started = time.monotonic()
        result = generate("--image", image, "--audio", media["audio"], "--generator", video_runs / "coarse",
                          "--out", tmp_path / "x.mp4")
        refused(result, str(image), *words)
        assert time.monotonic() - started < 30
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.timeout(120, func_only=True)
def test_a_huge_jpeg_is_read_reduced(video_runs, media, tmp_path):
    huge = tmp_path / "huge.jpg"          # 17000 x 17000: more than ffmpeg decodes; read at 1/4 while decoding
    cv2.imwrite(str(huge), np.full((17000, 17000), 128, np.uint8))
    started = time.monotonic()
    result = generate("--image", huge, "--audio", media["audio"], "--generator", video_runs / "coarse",
                      "--out", tmp_path / "x.mp4")
    refused(result, str(huge), "no face")                     # read, and found to be a grey square
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------ outputs over inputs and runs
def test_out_naming_an_input_another_way_is_refused(video_runs, media, tmp_path):
    reference = Path(shutil.copy(media["reference"], tmp_path / "ref.mp4"))
    os.link(reference, tmp_path / "hardlink.mp4")
    (tmp_path / "sub").mkdir()
    before = hashes(tmp_path, media["audio"], media["image"])
    base = ["--image", media["image"], "--generator", video_runs / "coarse"]
    cases = [(["--audio", media["audio"], "--pose-from", reference, "--out", reference], "--pose-from"),
             (["--audio", reference, "--out", tmp_path / "sub" / ".." / "ref.mp4"], "--audio"),   # ffmpeg's check
             (["--audio", reference, "--out", tmp_path / "hardlink.mp4"], "--audio")]              # missed these
    for args, flag in cases:
        refused(generate(*base, *args), "would overwrite the input", flag)
    refused(generate(*base, "--audio", media["audio"], "--out", video_runs / "coarse" / "talk.mp4", "--force"),
            "inside --generator")
    assert hashes(tmp_path, media["audio"], media["image"]) == before


def test_out_beside_a_run_or_over_foreign_files_needs_force(video_runs, media, earlier, tmp_path):
    run_copy = Path(shutil.copytree(video_runs / "coarse", tmp_path / "coarse"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "talk.json").write_text('{"my": "notes"}\n')
    before = hashes(tmp_path)
    base = ["--image", media["image"], "--audio", media["audio"], "--generator", video_runs / "coarse"]
    refused(generate(*base, "--out", run_copy / "step-00000100.mp4"), "holds a training run's files", "--force")
    refused(generate(*base, "--out", mine / "talk.mp4"), "talk.json exists and was not written by", "--force")
    assert hashes(tmp_path) == before
    gif = tmp_path / "portrait.gif"                                # a GIF portrait (was "video is empty")
    subprocess.run([*FFMPEG, "-i", str(media["image"]), str(gif)], check=True)
    result = generate(*base[2:], "--image", gif, "--out", mine / "talk.mp4", "--force")  # asked for: replaced
    assert result.exit_code == 0, result.output
    info = json.loads((mine / "talk.json").read_text())
    assert info["command"] == "posetalk-generate" and info["image"] == str(gif) and info["frames"] == 25
    again = copy_of(earlier, tmp_path)                                          # its own earlier output: replaced
    result = generate(*base, "--natural-motion", "2", "--out", again)
    assert result.exit_code == 0, result.output
    assert json.loads(again.with_suffix(".json").read_text())["natural_motion_deg"] == 2
    assert not leftovers(mine) and not leftovers(tmp_path)


def test_nan_audio_and_a_failed_or_interrupted_mux_leave_the_earlier_video(video_runs, media, earlier, tmp_path,
                                                                            monkeypatch):
    import scipy.io.wavfile

    from posetalk_data.media import MediaError
    from posetalk_models.generate import render

    out = copy_of(earlier, tmp_path)
    before = hashes(tmp_path)
    samples = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 300)).astype(np.float32)
    samples[4000:4100] = np.nan
    nan_wav = tmp_path / "nan.wav"
    scipy.io.wavfile.write(nan_wav, 16000, samples)                   # a float WAV with NaN samples
    base = ["--image", media["image"], "--generator", video_runs / "coarse", "--out", out]
    refused(generate(*base, "--audio", nan_wav), str(nan_wav), "100 audio samples are not numbers")
    before[str(nan_wav)] = hashes(nan_wav)[str(nan_wav)]

    def broken_mux(video, audio, target, *, seconds):
        Path(target).write_bytes(b"\0" * 48)                          # what a failed mux left at --out
        raise MediaError("muxing the audio failed: simulated")

    monkeypatch.setattr(render, "mux_audio", broken_mux)
    refused(generate(*base, "--audio", media["audio"]), "simulated")

    def interrupted_mux(video, audio, target, *, seconds):
        shutil.copy(video, target)                                    # a playable part of the video, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "mux_audio", interrupted_mux)
    result = generate(*base, "--audio", media["audio"])
    assert result.exit_code != 0
    assert hashes(tmp_path) == before and not leftovers(tmp_path)


def test_pose_generate_guards_its_outputs_too(pose_runs, media, tmp_path):
    audio = Path(shutil.copy(media["audio"], tmp_path / "speech.npy"))     # any file ffmpeg reads is speech
    (tmp_path / "poses.json").write_text("{}\n")
    before = hashes(tmp_path, pose_runs / "pld")
    base = ["--run", pose_runs / "pld", "--steps", "2"]
    refused(pose(*base, "--audio", audio, "--out", audio), "would overwrite the input --audio")
    refused(pose(*base, "--audio", media["audio"], "--out", pose_runs / "pld" / "p.npy", "--force"), "inside --run")
    refused(pose(*base, "--audio", media["audio"], "--out", tmp_path / "poses"), "poses.json exists")
    assert hashes(tmp_path, pose_runs / "pld") == before
    for damage in ("truncated", "garbled"):
        run = Path(shutil.copytree(pose_runs / "pld", tmp_path / damage))
        newest = sorted(run.glob("step-*.safetensors"))[-1]
        if damage == "truncated":
            newest.write_bytes(newest.read_bytes()[:100])
        else:
            newest.with_suffix(".json").write_text("{")
        refused(pose("--run", run, "--audio", media["audio"], "--out", tmp_path / "p2"), str(newest.with_suffix("")),
                {"truncated": "truncated or not a safetensors file", "garbled": "damaged checkpoint sidecar"}[damage])
    result = pose(*base, "--audio", media["audio"], "--out", tmp_path / "new", "--no-plot")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "new.json").read_text())["command"] == "posetalk-pose generate"
    assert np.load(tmp_path / "new.npy").shape[0] == 25 and not leftovers(tmp_path)


# ------------------------------------------------------------------ options, devices, damaged runs
def test_seed_is_checked_in_every_mode_and_names_the_option(video_runs, pose_runs, media, tmp_path):
    base = ["--image", media["image"], "--audio", media["audio"], "--generator", video_runs / "coarse",
            "--out", tmp_path / "x.mp4", "--seed", "-1"]
    for extra in ([], ["--pld", pose_runs / "pld"]):
        result = generate(*base, *extra)
        assert result.exit_code == 2 and "'--seed'" in result.output, result.output
    result = pose("--run", pose_runs / "pld", "--audio", media["audio"], "--out", tmp_path / "p", "--seed", "-1")
    assert result.exit_code == 2 and "'--seed'" in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_cuda_without_a_gpu_is_one_line(video_runs, video_build, pose_runs, media, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(generate("--image", media["image"], "--audio", media["audio"], "--generator", video_runs / "coarse",
                     "--out", tmp_path / "x.mp4", "--device", "cuda"), "--device cuda", "no CUDA GPU")
    refused(pose("--run", pose_runs / "pld", "--audio", media["audio"], "--out", tmp_path / "p", "--device",
                 "cuda:1"), "--device cuda:1", "no CUDA GPU")
    refused(evaluate("--manifest", video_build / "held.json", "--generator", video_runs / "coarse", "--out",
                     tmp_path / "e", "--device", "cuda"), "no CUDA GPU")
    assert not list(tmp_path.iterdir())


def test_a_damaged_checkpoint_or_sidecar_is_named(video_runs, media, tmp_path):
    def damaged(name: str, change) -> Path:
        run = tmp_path / name
        shutil.copytree(video_runs / "refine", run)
        change(run)
        return run

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def edit(path: Path, change) -> None:
        info = json.loads(path.read_text())
        change(info)
        path.write_text(json.dumps(info))

    wider = lambda info: info["config"]["model"].update(base=info["config"]["model"]["base"] * 2)  # noqa: E731
    cases = [
        (damaged("cut", lambda r: truncate(r / "step-00000200.safetensors")), "step-00000200.safetensors",
         "truncated"),
        (damaged("cut_copy", lambda r: truncate(r / "coarse.safetensors")), "coarse.safetensors", "truncated"),
        (damaged("garbled", lambda r: (r / "step-00000200.json").write_text("{\"kind\": ")),
         "step-00000200.json", "damaged checkpoint sidecar"),
        (damaged("no_kind", lambda r: edit(r / "step-00000200.json", lambda i: i.pop("kind"))),
         "step-00000200.json", "no model kind"),
        (damaged("resized", lambda r: edit(r / "coarse.json", wider)), "coarse.safetensors", "do not fit"),
    ]
    for run, name, words in cases:
        before = hashes(run)
        result = generate("--image", media["image"], "--audio", media["audio"], "--generator", run,
                          "--out", tmp_path / "x.mp4")
        refused(result, name, words)
        assert hashes(run) == before
    assert not list(tmp_path.glob("x.*"))


# ------------------------------------------------------------------ evaluation
def first_clip(video_build: Path, tmp_path: Path) -> tuple[str, np.ndarray]:
    """(key, frames at the stored 64 px) of the first held-out clip."""
    from posetalk_data.media import read_frames
    from posetalk_data.reading import read_samples

    key, sample = next(read_samples(video_build / "held.json"))
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(sample["video.mp4"])
    return key, np.stack(list(read_frames(mp4, fps=25)))


def method_video(folder: Path, key: str, frames: np.ndarray) -> Path:
    """Another method's result for clip `key`: <key>.mp4 in `folder`."""
    from posetalk_models.generate.render import write_video

    return write_video(frames, folder / f"{key}.mp4")


def test_eval_of_short_clips_scores_them_and_a_short_method_video_is_incomplete(video_runs, video_build, tmp_path):
    key, frames = first_clip(video_build, tmp_path)
    method_video(tmp_path / "short", key, frames[:5])
    before = hashes(tmp_path / "short")
    # 12 frames (under a second), a 96 px evaluation of a 64 px generator, a 5-frame video of another method
    result = evaluate("--manifest", video_build / "held.json", "--generator", video_runs / "refine", "--out",
                      tmp_path / "e", "--max-clips", "1", "--max-frames", "12", "--size", "96",
                      "--videos", f"short={tmp_path / 'short'}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    rows = metrics["rows"]
    assert rows["real"]["face_found"] == 1 and rows["real"]["pose_error"] == 0      # was: face found 0
    assert {"pose_error", "gaze_error", "identity_dlib", "aed_landmark"} <= set(rows["model"])
    assert rows["model"]["face_found"] > 0 and metrics["settings"]["size"] == 96
    assert rows["short"] == {} and "5 of the clip's 12 frames" in metrics["incomplete"]["short"][0]
    assert "short" not in metrics["per_clip"][key]                                  # not scored on 5 frames
    table = (tmp_path / "e" / "metrics.md").read_text()
    assert "| short (incomplete: not averaged) |" in table and "| short (incomplete" in result.output
    assert hashes(tmp_path / "short") == before


def test_eval_at_a_size_decord_scales_badly(video_build, tmp_path):
    key, frames = first_clip(video_build, tmp_path)
    method_video(tmp_path / "same", key, frames[:30])
    result = evaluate("--manifest", video_build / "held.json", "--out", tmp_path / "e", "--max-clips", "1",
                      "--max-frames", "10", "--size", "48", "--videos", f"same={tmp_path / 'same'}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    real = np.stack([cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in frames[:10]]) / 255
    floor = 10 * np.log10(1 / ((real - real[:1]) ** 2).mean())        # the first frame repeated, at 48 px
    assert metrics["per_clip"][key]["static"]["psnr"] == pytest.approx(floor, rel=1e-3)
    assert metrics["rows"]["same"]["ssim"] > 0.8
