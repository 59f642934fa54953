"""Landmark backends: MediaPipe on a real crop, FAN with a tiny random model of the real class, missing weights."""
import time

import numpy as np
import pytest

from posetalk_data.config import LandmarksConfig
from posetalk_data.media import read_frames
from posetalk_data.stages.landmarks import FAN_FILE, FanLandmarks, LandmarksStage, fill_gaps


def test_fill_gaps_interpolates_missing_frames():
    pts = np.zeros((5, 2, 3), np.float32)
    pts[:, 0, 0] = [0, 1, np.nan, 3, 4]
    pts[2] = np.nan
    out = fill_gaps(pts)
    assert np.isfinite(out).all() and out[2, 0, 0] == pytest.approx(2.0)


def test_missing_fan_weights_is_a_fast_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    stage = LandmarksStage(LandmarksConfig(backend="fan"), crop_scale=2.0)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        stage.check()
    assert time.perf_counter() - started < 1.0
    text = str(err.value)
    assert FAN_FILE in text and str(tmp_path) in text and "landmarks.fan_weights" in text and "mediapipe" in text
    assert "posetalk-data models pull --only fan" in text


def test_fan_backend_runs_real_code_with_tiny_random_model(tmp_path, samples):
    torch = pytest.importorskip("torch")
    from face_alignment.models import FAN

    torch.manual_seed(0)
    weights = tmp_path / FAN_FILE
    torch.save(FAN(num_modules=1).state_dict(), weights)
    fan = FanLandmarks(weights)
    frames = [f for _, f in zip(range(3), read_frames(samples / "paired/styletalk_feifeili_clip1/feifeili_clip1.mp4",
                                                      fps=25))]
    points, scores = fan(frames, face_side=128)
    assert points.shape == (3, 68, 2) and scores.shape == (3, 68)
    assert np.isfinite(points).all()
