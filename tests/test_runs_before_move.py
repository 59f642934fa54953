"""Run folders made before issue 18 moved posetalk_models into rooms (tests/data/runs-before-move, made by
scripts/make_old_runs.py with that code) still load through runs.load_run and still generate."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import REPO
from posetalk_models.runs import KINDS, load_run

OLD = REPO / "tests" / "data" / "runs-before-move"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_old_run_loads(kind):
    run = load_run(OLD / kind)
    assert run.kind == kind and not run.model.training
    assert list(run.stages) == list(KINDS[kind].frozen)        # the frozen copies it carries, loaded too
    assert all(p.is_file() for p in run.weight_files)
    with pytest.raises(ValueError, match=f"is a checkpoint of a {kind} run"):
        load_run(OLD / kind, kinds=tuple(k for k in KINDS if k != kind))


def test_an_old_sync_expert_judges_and_an_old_pld_generates_poses():
    from posetalk_models.generate.pose import generate_poses, load_pld

    expert = load_run(OLD / "sync").model
    cfg = expert.cfg
    mouths = torch.rand(2, 3 * cfg.frames, *cfg.mouth_size) * 2 - 1
    assert torch.isfinite(expert(mouths, torch.randn(2, cfg.frames, cfg.speech_dim))).all()
    pld, vae, sidecar = load_pld(OLD / "pld")
    speech = np.random.default_rng(0).standard_normal((30, pld.cfg.speech_dim)).astype(np.float32)
    poses = generate_poses(pld, vae, sidecar["stats"], 30, speech, None, mode="audio", guidance=1.0, steps=2,
                           overlap=None, seed=0)[0]
    assert poses.shape[0] == 30 and np.isfinite(poses).all()


def test_an_old_enhance_run_generates_a_video_with_an_old_pld_run(samples, tmp_path):
    from posetalk_models.cli.generate import app

    out = tmp_path / "talk.mp4"
    result = CliRunner().invoke(app, [str(a) for a in (
        "--image", samples / "images" / "liveportrait_d19.jpg", "--audio", samples / "audio" / "hallo_1.wav",
        "--generator", OLD / "enhance", "--enhance", "--pld", OLD / "pld", "--steps", "2", "--out", out)])
    assert result.exit_code == 0, result.output
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["generator"]["stage"] == "enhance" and info["mode"] == "generated" and out.stat().st_size > 0
