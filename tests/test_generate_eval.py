"""posetalk-generate in the three pose modes and posetalk-eval (issue 12), with the tiny generator runs trained on
real clips, real portraits and real speech."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from posetalk_models.generate import drive


def probe_streams(path: Path) -> dict[str, dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,nb_read_frames,duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def generate(*args) -> object:
    from posetalk_models.cli.generate import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def inputs(samples) -> dict[str, Path]:
    return {"image": samples / "images" / "liveportrait_d19.jpg", "audio": samples / "audio" / "hallo_1.wav",
            "reference": samples / "videos" / "liveportrait_d20.mp4"}


def check_video(out: Path, audio: Path) -> tuple[np.ndarray, dict]:
    """A playable H.264 + AAC mp4 of exactly round(duration x 25) frames; its pose .npy and JSON sidecar."""
    streams = probe_streams(out)
    frames = int(duration(audio) * 25 + 0.5)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert int(streams["video"]["nb_read_frames"]) == frames
    assert abs(float(streams["audio"]["duration"]) - frames / 25) < 0.05
    motion, info = np.load(out.with_suffix(".npy")), json.loads(out.with_suffix(".json").read_text())
    assert motion.shape == (frames, 10) and info["frames"] == frames
    return motion, info


def test_fixed_mode_holds_the_portraits_pose(video_runs, inputs, tmp_path):
    out = tmp_path / "fixed.mp4"
    result = generate("--image", inputs["image"], "--audio", inputs["audio"], "--generator", video_runs / "refine",
                      "--out", out)
    assert result.exit_code == 0, result.output
    motion, info = check_video(out, inputs["audio"])
    assert info["mode"] == "fixed" and info["generator"]["stage"] == "refine"
    assert set(info["generator"]["sha256"]) == {"coarse.safetensors", "step-00000200.safetensors"}
    assert np.allclose(motion, motion[0]) and np.allclose(motion[0, :7], info["portrait_pose"], atol=1e-3)


def test_reference_mode_follows_the_reference_pose(video_runs, inputs, tmp_path):
    from posetalk_models.generate.faces import extraction_config, face_tracks
    from posetalk_models.runs import load_cascade

    out = tmp_path / "reference.mp4"
    result = generate("--image", inputs["image"], "--audio", inputs["audio"], "--generator", video_runs / "refine",
                      "--pose-from", inputs["reference"], "--out", out)
    assert result.exit_code == 0, result.output
    motion, info = check_video(out, inputs["audio"])
    pipeline = load_cascade(video_runs / "refine")[1]["pipeline"]          # the crop settings of the training build
    track = face_tracks(inputs["reference"], extraction_config(pipeline, single_face=False))[0]
    n = min(len(track.frames), len(motion))      # the reference (7 s) is shorter than the speech (7.5 s): looped
    assert info["mode"] == "reference" and info["reference"]["frames"] == len(track.frames) < len(motion)
    change = track.angles()[:n] - track.angles()[0]
    assert np.allclose(motion[:n, :7] - motion[0, :7], change, atol=1e-3)       # the reference's motion ...
    assert np.allclose(motion[0, :7], info["portrait_pose"], atol=1e-3)         # ... from the portrait's pose
    assert np.allclose(motion[n], motion[n - 2], atol=1e-3)                     # bounced back, no jump


def test_generated_mode_is_reproducible_by_seed(video_runs, pose_runs, inputs, tmp_path):
    args = ["--image", inputs["image"], "--audio", inputs["audio"], "--generator", video_runs / "coarse",
            "--pld", pose_runs / "pld", "--prompt", "nods slowly", "--steps", "4"]
    outputs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = generate(*args, "--seed", seed, "--out", tmp_path / f"{name}.mp4")
        assert result.exit_code == 0, result.output
        outputs.append(check_video(tmp_path / f"{name}.mp4", inputs["audio"]))
    (a, info), (b, _), (c, _) = outputs
    assert info["mode"] == "generated" and info["pld"]["prompt"] == "nods slowly"
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_portraits_without_exactly_one_face_are_refused(video_runs, samples, inputs, tmp_path):
    faceless = tmp_path / "pattern.png"
    cv2.imwrite(str(faceless), np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3)))
    two = tmp_path / "two.jpg"
    left, right = (cv2.resize(cv2.imread(str(samples / "images" / n)), (360, 360))
                   for n in ("liveportrait_d19.jpg", "liveportrait_d8.jpg"))
    cv2.imwrite(str(two), np.concatenate([left, right], 1))
    for image, words in ((faceless, "no face"), (two, "more than one face"), (tmp_path / "none.jpg", "no such file")):
        result = generate("--image", image, "--audio", inputs["audio"], "--generator", video_runs / "refine",
                          "--out", tmp_path / "x.mp4")
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "x.mp4").exists()


def test_drive_loops_forwards_then_backwards():
    seq = np.arange(4.0)[:, None]
    assert drive.looped(seq, 9)[:, 0].tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]


# ------------------------------------------------------------------ evaluation
def test_face_tracks_of_frames_in_memory_equal_those_of_their_file(samples, monkeypatch):
    """The evaluator hands the extractor frames in memory: nothing is probed, decoded or encoded for them, and the
    face found is the one the same frames give when read from their file."""
    from posetalk_data.media import read_frames
    from posetalk_data.stages import normalise, probe
    from posetalk_models.generate.faces import extraction_config, face_tracks

    video = samples / "videos" / "grid_bbaf2n.mpg"
    cfg = extraction_config(None, single_face=False)
    from_file = face_tracks(video, cfg)[0]
    frames = np.stack(list(read_frames(video, fps=25)))

    def no_file(*args, **kwargs):
        raise AssertionError("frames in memory must not be read from a file")

    monkeypatch.setattr(normalise, "read_frames", no_file)
    monkeypatch.setattr(probe, "probe", no_file)
    held = face_tracks(frames, cfg)[0]
    assert len(held.frames) == len(from_file.frames) and (held.start, held.end) == (from_file.start, from_file.end)
    np.testing.assert_array_equal(held.pose, from_file.pose)
    np.testing.assert_array_equal(held.landmarks, from_file.landmarks)
    with pytest.raises(ValueError, match=r"give \(T, H, W, 3\) uint8"):
        face_tracks(frames.astype(np.float32), cfg)


@pytest.fixture(scope="module")
def evaluated(video_runs, video_build, tmp_path_factory):
    from posetalk_models.evaluate.video import evaluate
    from posetalk_models.generate.faces import EXTRACTOR

    out = tmp_path_factory.mktemp("eval")
    before = EXTRACTOR.setups
    result = evaluate(video_build / "held.json", out, generator=video_runs / "refine", limit=2, max_frames=30)
    # the face models are set up once for all the rows of both clips (the same length), not per row and clip
    assert EXTRACTOR.setups - before <= 1
    return out, result


def test_real_against_itself_is_perfect_and_static_is_the_floor(evaluated, video_build):
    from posetalk_data.reading import read_samples
    from posetalk_data.members import mp4_frames

    out, result = evaluated
    rows = result["rows"]
    assert rows["real"]["ssim"] == 1 and rows["real"]["psnr"] == float("inf")
    assert rows["real"]["pose_error"] == rows["real"]["gaze_error"] == rows["real"]["mouth_open_error"] == 0
    key, sample = next(read_samples(video_build / "held.json"))
    real = mp4_frames(sample["video.mp4"], list(range(30)), 64).astype(np.float64) / 255
    floor = 10 * np.log10(1 / ((real - real[:1]) ** 2).mean())         # the first frame repeated, computed here
    assert result["per_clip"][key]["static"]["psnr"] == pytest.approx(floor, rel=1e-4)
    assert rows["static"]["ssim"] < 1 and rows["static"]["pose_error"] > 0
    assert set(rows["model"]) >= {"ssim", "psnr", "identity_dlib", "pose_error", "gaze_error", "aed_landmark",
                                  "mouth_open_error", "pose_diversity"}
    json.loads((out / "metrics.json").read_text())                     # valid JSON (inf written as "inf")
    assert len(list((out / "strips").glob("*.png"))) == 2


def test_metrics_without_weights_say_so_and_are_never_printed_under_the_papers_names(evaluated):
    out, result = evaluated
    assert "alexnet-owt-7be5be79.pth" in result["not_computed"]["lpips"]
    assert "syncnet_v2.model" in result["not_computed"]["lse_d / lse_c"]
    assert not any(k in result["rows"]["model"] for k in ("lpips", "lse_d", "lse_c", "identity_arcface"))
    table = (out / "metrics.md").read_text()
    assert "not ArcFace CSIM" in table and "not 3DMM AED" in table and "| LSE-D" not in table


def test_eval_cli_scores_other_methods_videos_and_weights_given_by_path(video_runs, video_build, tmp_path):
    from torchvision.models import alexnet

    from posetalk_data.reading import read_samples
    from posetalk_models.cli.eval import app
    from posetalk_data.members import mp4_frames
    from posetalk_models.generate.render import write_video
    from posetalk_models.nets.syncnet_v2 import SyncNetV2

    key, sample = next(read_samples(video_build / "held.json"))
    other = tmp_path / "other"
    write_video(np.repeat(mp4_frames(sample["video.mp4"], [0], 64), 30, 0), other / f"{key}.mp4")
    torch.save(alexnet().state_dict(), tmp_path / "alexnet.pth")        # untrained: the code path, not a figure
    torch.save(SyncNetV2().state_dict(), tmp_path / "syncnet.pth")
    result = CliRunner().invoke(app, ["--manifest", str(video_build / "held.json"), "--out", str(tmp_path / "e"),
                                      "--videos", f"still={other}", "--max-clips", "1", "--max-frames", "30",
                                      "--lpips-weights", str(tmp_path / "alexnet.pth"),
                                      "--syncnet-weights", str(tmp_path / "syncnet.pth")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "e" / "metrics.json").read_text())["rows"]
    assert set(rows) == {"real", "static", "still"} and rows["real"]["lpips"] == 0
    assert abs(rows["still"]["ssim"] - rows["static"]["ssim"]) < 0.05          # the same frames, re-encoded
    assert all(np.isfinite(rows[r]["lse_d"]) for r in rows)
    assert "| still |" in result.output
