"""Pose metrics: Fréchet distance against the Gaussian formula, diversity against analytic values, the text-control
sign conventions, and evaluate_run / `posetalk-train eval` on a tiny trained PLD run over real shards."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.linalg import sqrtm
from typer.testing import CliRunner

from posetalk_data.motion_text import SUSTAINED
from posetalk_models.cli.train import app
from posetalk_models.generate.pose import FeatureMismatch
from posetalk_models.evaluate.pose import (control_prompt, control_scores, diversity_across_samples,
                                     diversity_over_time, evaluate_run, frechet_distance, gaussian_frechet_distance)
from posetalk_models.nets.pld import MODES

EVAL = dict(windows=8, steps=2, guidance=2.0, seed=1)


def random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


# ------------------------------------------------------------------ Fréchet distance
def test_gaussian_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for rank in (None, 3):   # full rank, and singular covariances (as with fewer samples than dimensions)
        mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
        c1, c2 = random_cov(rng, 8, rank), random_cov(rng, 8, rank)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
        assert gaussian_frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 2)) * [1.0, 2.0]
    same = rng.normal(size=(20000, 2)) * [1.0, 2.0]
    shifted = rng.normal(size=(20000, 2)) * [2.0, 1.0] + [3.0, 0.0]
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, same) < 0.01
    # diagonal covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 = 9 + 1 + 1
    assert frechet_distance(a, shifted) == pytest.approx(11.0, rel=0.02)


def test_frechet_distance_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 32)), rng.normal(size=(6, 32)) + 5.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert math.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 32 * 25 * 0.5
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(a[:1], b)


# ------------------------------------------------------------------ diversity
def test_diversity_over_time():
    t = np.arange(100)
    sine = 10 * np.sin(2 * np.pi * t / 25)                       # 4 whole periods: std = amplitude / sqrt 2
    windows = np.stack([np.stack([sine, 2 * sine, np.full(100, 7.0)], -1)] * 3)    # (3, 100, 3)
    assert diversity_over_time(np.full((4, 50, 3), 12.0)) == 0.0
    assert diversity_over_time(windows) == pytest.approx((10 + 20 + 0) / 3 / math.sqrt(2), rel=1e-9)
    padded = np.concatenate([windows, np.repeat(windows[:, -1:], 20, 1)], 1)  # padded as data.py pads
    assert diversity_over_time(padded, np.full(3, 100)) == pytest.approx(diversity_over_time(windows), rel=1e-9)
    assert diversity_over_time(padded) != pytest.approx(diversity_over_time(windows), rel=1e-3)


def test_diversity_across_samples():
    base = np.random.default_rng(3).normal(size=(5, 16, 3))
    assert diversity_across_samples(np.stack([base] * 4)) == pytest.approx(0.0, abs=1e-12)
    assert diversity_across_samples(np.stack([base - 2.0, base + 2.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        diversity_across_samples(base[None])


# ------------------------------------------------------------------ text control
def test_control_prompts_and_signs_follow_the_training_captions():
    # motion_text writes "turns ... to the left" for a yaw increase: a left turn must score positive
    assert SUSTAINED[("yaw", 1)] == "turn_left"
    assert control_prompt("nod") == "The person talks and nods."
    assert control_prompt("turn_left") == "The person talks and turns their head to the left."
    t = np.arange(32)
    still = np.zeros((4, 32, 10))
    nodding = still.copy()
    nodding[..., 1] = 5 * np.sign(np.sin(2 * np.pi * (t + 0.5) / 8))   # +-5 deg square wave: 4 jumps of 10 deg
    left, right = still.copy(), still.copy()
    left[..., 0], right[..., 0] = 10.0, -10.0
    scores = control_scores({"nod": nodding, "still": still, "turn_left": left, "turn_right": right})
    assert scores["nod"]["score"] == pytest.approx(7 * 10 / 31, abs=1e-4)          # 7 jumps in 31 differences
    assert scores["turn"]["values"] == [10.0, -10.0] and scores["turn"]["score"] == 20.0
    swapped = control_scores({"nod": still, "still": nodding, "turn_left": right, "turn_right": left})
    assert swapped["nod"]["score"] < 0 and swapped["turn"]["score"] < 0


# ------------------------------------------------------------------ a tiny trained run
@pytest.fixture(scope="module")
def manifest(grid_build):
    return grid_build / "manifest.json"


@pytest.fixture(scope="module")
def pld_run(pose_runs):
    return pose_runs / "pld"


@pytest.fixture(scope="module")
def figures(pld_run, manifest):
    return evaluate_run(pld_run, manifest, samples=2, **EVAL)


def test_evaluate_run_reports_finite_figures_for_every_mode(figures):
    assert figures["windows"] == 8 and figures["checkpoint_step"] == 40 and figures["samples"] == 2
    assert set(figures["modes"]) == set(MODES)
    for mode, row in figures["modes"].items():
        assert set(row) == {"fid_vae", "diversity_time_deg", "diversity_samples_deg"}, mode
        assert all(math.isfinite(v) and v >= 0 for v in row.values()), (mode, row)
    assert set(figures["vae"]) == {"recon_head_deg", "recon_gaze_deg"}
    assert all(math.isfinite(v) and v > 0 for v in figures["vae"].values())
    assert figures["real"]["diversity_time_deg"] > 0
    # different diffusion noise for the same conditions: the samples differ
    assert all(row["diversity_samples_deg"] > 0 for row in figures["modes"].values())
    control = figures["text_control"]
    assert set(control) == {"nod", "turn"}
    assert control["turn"]["prompts"] == [control_prompt("turn_left"), control_prompt("turn_right")]
    assert all(math.isfinite(v) for c in control.values() for v in [*c["values"], c["score"]])
    json.dumps(figures, allow_nan=False)


def test_eval_command_prints_and_writes_the_figures(pld_run, manifest, figures, tmp_path):
    """--out: the figures as printed; a file another command wrote is replaced only with --force (refused before
    any sampling), the command's own earlier figures without it."""
    out = tmp_path / "eval.json"
    args = ["eval", "--run", str(pld_run), "--manifest", str(manifest), "--windows", "8", "--steps", "2",
            "--out", str(out)]
    out.write_text('{"mine": 1}')
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "was not written by posetalk-train eval" in refused.output, refused.output
    assert out.read_text() == '{"mine": 1}'
    result = CliRunner().invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["command"] == "posetalk-train eval" and written["steps"] == 2
    assert written["modes"].keys() == figures["modes"].keys()
    assert all(math.isfinite(v) for row in written["modes"].values() for v in row.values())
    assert json.loads(result.stdout) == written
    again = CliRunner().invoke(app, [*args, "--seed", "5"])       # its own figures: replaced without --force
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["seed"] == 5


def test_evaluate_run_refuses_features_unlike_the_runs(pld_run, manifest, tmp_path):
    other = json.loads(manifest.read_text())
    other["versions"]["mel.npy"] = json.dumps({**json.loads(other["versions"]["mel.npy"]), "n_mels": 40})
    (tmp_path / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(FeatureMismatch, match="n_mels"):
        evaluate_run(pld_run, tmp_path / "manifest.json", **EVAL)
