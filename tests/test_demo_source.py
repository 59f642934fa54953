"""The demo source: generated clips are valid media, deterministic, and their known head rotation, eye rotation and
blinks are recoverable."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("mediapipe")

from posetalk_data import gaze as gz  # noqa: E402
from posetalk_data.gaze import spans as demo_spans  # noqa: E402
from posetalk_data.geometry import fit_head_pose, load_face_template, rotation_to_euler  # noqa: E402
from posetalk_data.sources import demo  # noqa: E402
from posetalk_data.sources.demo import DemoClip, make_demo_clips  # noqa: E402

SECONDS, FPS, SIZE = 4.0, 25, 512
NOSE_TIP = 1


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[DemoClip]:
    return make_demo_clips(tmp_path_factory.mktemp("demo"), seconds=SECONDS, fps=FPS, size=SIZE)


@pytest.fixture(scope="module")
def tracked(clips) -> dict[str, np.ndarray]:
    """name -> (T, 478, 3) MediaPipe landmarks of every frame of the clip."""
    return {clip.name: face_frame_landmarks(decode(clip.video, SIZE)) for clip in clips}


def decode(path: Path, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "pipe:"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size, size, 3)


def ffprobe(path: Path) -> dict:
    """ffprobe's streams and format of a file, as JSON."""
    return json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                      "-show_format", str(path)], capture_output=True, check=True).stdout)


def face_frame_landmarks(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 3) MediaPipe landmarks in the face frame (x = u, y = -v, z = -z_mp * W), NaN where no face."""
    import mediapipe as mp

    out = np.full((len(frames), 478, 3), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        for i, frame in enumerate(frames):
            res = fm.process(frame)
            if res.multi_face_landmarks:
                lm = np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark])
                h, w = frame.shape[:2]
                out[i] = np.stack([lm[:, 0] * w, -lm[:, 1] * h, -lm[:, 2] * w], -1)
    return out


def similarity_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R of the least-squares similarity fit dst ~ s R src + t (Umeyama), for (N, 3) point sets."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def test_clips_are_valid_media(clips):
    assert [c.name for c in clips] == ["astronaut_yaw", "grace_nod", "astronaut_tilt", "grace_mixed"]
    n = int(round(SECONDS * FPS))
    for clip in clips:
        info = ffprobe(clip.video)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert len(video) == 1 and len(audio) == 1
        assert video[0]["codec_name"] == "h264" and video[0]["pix_fmt"] == "yuv420p"
        assert video[0]["r_frame_rate"] == "25/1" and video[0]["avg_frame_rate"] == "25/1"
        assert (video[0]["width"], video[0]["height"]) == (SIZE, SIZE)
        assert audio[0]["codec_name"] == "aac"
        assert abs(float(info["format"]["duration"]) - SECONDS) < 0.1
        assert abs(float(audio[0]["duration"]) - SECONDS) < 0.1
        pose = np.load(clip.pose)
        assert pose.dtype == np.float32 and pose.shape == (n, 3)
        assert len(decode(clip.video, SIZE)) == n == int(video[0]["nb_frames"])
        assert np.allclose(pose[0], 0) and np.abs(pose).max() <= 20
        gaze = np.load(clip.gaze)
        shut = np.isnan(gaze).all(1)
        assert gaze.dtype == np.float32 and gaze.shape == (n, 4) and np.isnan(gaze[shut]).all()
        assert 2 <= len(demo_spans(shut)) <= 4 and not shut[:FPS].any()  # blinks, none in the first second
        assert np.allclose(gaze[0], 0) and np.array_equal(gaze[~shut, :2], gaze[~shut, 2:])  # eyes together
        assert 10 < np.abs(gaze[~shut, 0]).max() <= 20 and 3 < np.abs(gaze[~shut, 1]).max() <= 8


def test_deterministic_and_idempotent(tmp_path):
    first = make_demo_clips(tmp_path / "a", seconds=0.4)
    demo._portrait.cache_clear()  # run FaceMesh on the portraits again too
    second = make_demo_clips(tmp_path / "b", seconds=0.4)
    for a, b in zip(first, second):
        assert np.array_equal(np.load(a.pose), np.load(b.pose))
        assert np.array_equal(np.load(a.gaze), np.load(b.gaze), equal_nan=True)
        assert np.array_equal(decode(a.video, 512), decode(b.video, 512))
    stamp = first[0].video.stat().st_mtime_ns
    again = make_demo_clips(tmp_path / "a", seconds=0.4)  # complete clips are kept, not rebuilt
    assert again == first and first[0].video.stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp" in p.name]


def test_pose_is_recoverable(clips, tracked):
    """MediaPipe on the generated frames + a 3D similarity fit to frame 0 tracks the known rotation.

    Signs and axes must match exactly; the magnitude only roughly: MediaPipe's z does not fully follow a turn
    (its depth leans towards a frontal face), so this fit reads yaw at about 0.6-0.8 of the truth. The ground
    truth itself is exact (it is the rotation applied to the landmarks)."""
    report = []
    for clip in clips:
        truth = np.load(clip.pose).astype(np.float64)
        lm = tracked[clip.name]
        assert not np.isnan(lm[:, 0, 0]).any(), f"{clip.name}: face lost in some frames"
        rigid = lm[0, :, 1] > lm[0, NOSE_TIP, 1]  # upper face: unaffected by the talking mouth and jaw
        est = np.array([rotation_to_euler(similarity_rotation(lm[0, rigid], f[rigid])) for f in lm])
        for axis, name in enumerate(("yaw", "pitch", "roll")):
            err = np.abs(est[:, axis] - truth[:, axis])
            line = f"{clip.name:15s} {name:5s} range {np.ptp(truth[:, axis]):4.1f} mae {err.mean():4.2f} max {err.max():4.2f}"
            if np.ptp(truth[:, axis]) > 1:  # a driven axis: follows the truth with the right sign
                corr = np.corrcoef(est[:, axis], truth[:, axis])[0, 1]
                gain = np.polyfit(truth[:, axis], est[:, axis], 1)[0]
                report.append(f"{line} corr {corr:.3f} gain {gain:.2f}")
                assert corr > 0.95 and 0.5 < gain < 1.2 and err.mean() < 5.0, report[-1]
            else:  # an idle axis: little leaks into it. MediaPipe's floats differ with the CPU's kernels (XNNPACK):
                # astronaut_tilt's pitch peaks at 5.07 deg in one frame on an AVX2-only AMD EPYC, under 5 elsewhere
                report.append(line)
                assert err.mean() < 2.0 and err.max() < 6.0, report[-1]
    print("\n".join(report))


def test_gaze_and_blinks_are_recoverable(clips, tracked):
    """The gaze stage's own code (posetalk_data.gaze.gaze_track) on MediaPipe's landmarks of the generated frames
    follows the known eye rotation and finds the known blinks.

    Away from blinks, per eye and axis: r and the MAE once the constant offset is removed (zero is the portrait's
    own gaze, which is unknown). MediaPipe's iris follows a shifted iris only part of the way (gain ~0.5-0.9 in
    yaw, ~0.1-0.45 in pitch: the demo moves the iris but not the lids, which real eyes also move when they look up
    or down), and Grace Hopper's glasses make her eyes harder still, so pitch is asserted on the astronaut only."""
    template, report = load_face_template(), []
    for clip in clips:
        truth, head = np.load(clip.gaze).astype(np.float64), np.load(clip.pose).astype(np.float64)
        lm = tracked[clip.name]
        track = gz.gaze_track(lm, fit_head_pose(lm, template), template, FPS, 0.2)
        shut = np.isnan(truth).all(1)
        near = shut | np.roll(shut, 1) | np.roll(shut, -1)
        for k, axis in enumerate(("left yaw", "left pitch", "right yaw", "right pitch")):
            est, ref = track.gaze[~near, k], truth[~near, k]
            r, d = np.corrcoef(est, ref)[0, 1], est - ref
            mae, gain = np.abs(d - d.mean()).mean(), np.polyfit(ref, est, 1)[0]
            report.append(f"{clip.name:15s} {axis:11s} r {r:.2f} MAE {mae:.1f} offset {d.mean():+.1f} gain {gain:.2f}")
            if "yaw" in axis:
                assert r > 0.65 and mae < 5.5, report[-1]
            elif clip.name.startswith("astronaut"):
                assert r > 0.5 and mae < 3.5, report[-1]
        err = (track.gaze - truth)[~near][:, [0, 2]].mean(1)
        if head[:, 0].std() > 1:   # the head turns: little of it leaks into the eyes' yaw
            slope = np.polyfit(head[~near, 0], err, 1)[0]
            report.append(f"{clip.name:15s} yaw error per degree of head yaw {slope:+.2f}")
            assert abs(slope) < 0.35, report[-1]
        found = track.closed.any(1)
        filled = np.stack([np.interp(np.flatnonzero(shut), np.flatnonzero(~shut), truth[~shut, k])
                           for k in range(4)], 1)
        worst = np.abs(track.gaze[shut] - filled).max()
        report.append(f"{clip.name:15s} blinks: {found[shut].mean():.0%} of {shut.sum()} shut frames found, "
                      f"{(found & ~near).sum()} false; worst gaze on shut frames {worst:.1f} deg off")
        assert not (found & ~near).any(), report[-1]
        if clip.name.startswith("astronaut"):
            assert found[shut].mean() >= 0.75 and worst < 15, report[-1]
    print("\n".join(report))
