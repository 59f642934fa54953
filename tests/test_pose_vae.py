"""Pose VAE: the data pipeline over real shards, learning, overfitting, checkpoint round-trip and resume."""
from __future__ import annotations

import json

import pytest
import torch

from posetalk_models.data.windows import CHANNELS, DataConfig, loader, normalise, pose_stats
from posetalk_models.train.config import LoopConfig, TrainVAEConfig
from posetalk_models.evaluate.pose import recon_error_deg
from posetalk_models.runs import load_run
from posetalk_models.train.pose_vae import train_vae
from posetalk_models.nets.vae import PoseVAE

QUIET_LOOP = LoopConfig(progress=False, log_every=5, ckpt_every=20, batch_size=8)


def quiet(max_steps: int) -> TrainVAEConfig:
    return TrainVAEConfig(loop=QUIET_LOOP.model_copy(update={"max_steps": max_steps}))


@pytest.fixture(scope="module")
def manifest(grid_build):
    return grid_build / "manifest.json"


def test_windows_with_two_workers_and_one_shard(manifest):
    assert len(json.loads(manifest.read_text())["shards"]) == 1  # fewer shards than workers
    dl = loader(manifest, DataConfig(window=16, seed=3), batch_size=4, num_workers=2)
    batches = [b for _, b in zip(range(4), dl)]
    b = batches[0]
    assert b["pose"].shape == (4, 16, len(CHANNELS)) and b["pose"].dtype == torch.float32
    assert b["speech"].shape == (4, 16, 80) and b["speech"].dtype == torch.float32
    assert b["text"].shape == (4, 384) and b["length"].tolist() == [16] * 4
    assert torch.isfinite(b["pose"]).all() and b["pose"][:, 0, 7:].abs().max() < 1e-6  # window-relative
    again = [b for _, b in zip(range(4), loader(manifest, DataConfig(window=16, seed=3), batch_size=4,
                                                num_workers=2))]
    assert all(torch.equal(x["pose"], y["pose"]) for x, y in zip(batches, again))  # deterministic by seed


def test_short_clips_are_padded_with_their_length(manifest):
    b = next(iter(loader(manifest, DataConfig(window=100, speech=None, text=None), batch_size=2)))
    assert b["pose"].shape == (2, 100, 10) and b["length"].tolist() == [75, 75]
    assert torch.equal(b["pose"][:, 75], b["pose"][:, 99])


def test_pose_stats(manifest):
    stats = pose_stats(manifest, window=16)
    assert stats["channels"] == list(CHANNELS) and len(stats["std"]) == 10 and min(stats["std"]) > 0


def test_loss_goes_down_and_checkpoint_round_trips_and_resumes(manifest, tmp_path):
    run = tmp_path / "run"
    last = train_vae(manifest, run, quiet(40))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-1] == 40 and last.name == "step-00000040.safetensors"
    assert rows[-1]["recon"] < 0.7 * rows[0]["recon"]

    loaded = load_run(run, kinds=("vae",))
    model, stats = loaded.model, loaded.sidecar["stats"]
    sidecar = json.loads(last.with_suffix(".json").read_text())
    assert sidecar["step"] == 40 and sidecar["stats"] == stats and "posetalk_version" in sidecar
    batch = next(iter(loader(manifest, DataConfig(window=16, speech=None, text=None), batch_size=4)))
    x = normalise(batch["pose"], stats)
    again = load_run(last).model
    with torch.no_grad():
        assert torch.equal(model(x)[0], again(x)[0])
    err = recon_error_deg(model, batch, stats)
    assert set(err) == {"head_deg", "gaze_deg"} and 0 <= err["head_deg"] < 20

    last = train_vae(manifest, run, quiet(50))  # resume: 10 more steps
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-2:] == [45, 50] and steps.count(40) == 1 and last.name == "step-00000050.safetensors"
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["step-00000040.safetensors",
                                                                 "step-00000050.safetensors"]


def test_overfits_two_windows(manifest):
    torch.manual_seed(0)
    cfg = TrainVAEConfig().model
    batch = next(iter(loader(manifest, DataConfig(window=16, speech=None, text=None, seed=1), batch_size=2)))
    stats = pose_stats(manifest, window=16)
    x = normalise(batch["pose"], stats)
    model = PoseVAE(cfg.model_copy(update={"kl_weight": 1e-4}))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = model.loss(x)["recon"].item()
    for _ in range(150):
        loss = model.loss(x)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = model.loss(x)["recon"].item()
    assert final < first / 20, (first, final)
    assert recon_error_deg(model, batch, stats)["head_deg"] < 1.0


def test_posetalk_train_vae_command(manifest, tmp_path):
    from typer.testing import CliRunner

    from posetalk_models.cli.train import app

    result = CliRunner().invoke(app, ["vae", "--manifest", str(manifest), "--out", str(tmp_path / "run"),
                                      "--max-steps", "3", "--set", "data.window=8", "--set", "model.d_model=32",
                                      "--set", "loop.batch_size=4", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "step-00000003.safetensors").is_file()
    missing = CliRunner().invoke(app, ["vae", "--manifest", str(tmp_path / "nope.json"), "--out", str(tmp_path)])
    assert missing.exit_code == 2


def test_epoch_mode_training_runs_several_epochs(manifest, tmp_path):
    from posetalk_models.train.config import load_train_config

    # 2 clips x 2 windows = 4 windows an epoch, batch 2: 5 steps need 3 epochs
    cfg = load_train_config("vae", None, ["loop.max_steps=5", "loop.progress=false", "loop.batch_size=2",
                                          "data.resample=false", "data.windows_per_clip=2", "data.shuffle_buffer=4"])
    assert train_vae(manifest, tmp_path / "run", cfg).name == "step-00000005.safetensors"


# ---------------------------------------------------------------- hostile input (issue 10): one-line errors
TINY_CLI = ["--max-steps", "2", "--set", "data.window=8", "--set", "model.d_model=32", "--set", "loop.batch_size=4",
            "--set", "loop.progress=false", "--workers", "0"]


def train_cli(*args):
    from typer.testing import CliRunner

    from posetalk_models.cli.train import app

    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result) -> bool:
    return result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output


def test_resuming_with_other_data_or_settings_is_refused(manifest, tmp_path):
    from posetalk_data.manifest import filter_manifest

    run = tmp_path / "run"
    assert train_cli("vae", "--manifest", manifest, "--out", run, *TINY_CLI).exit_code == 0
    other = tmp_path / "other.json"
    filter_manifest(manifest, "duration > 0", other)       # the same samples through another manifest file
    result = train_cli("vae", "--manifest", other, "--out", run, *TINY_CLI, "--set", "data.window=16")
    assert refused(result) and "data.window: was 8, now 16" in result.output and "training manifest" in result.output
    # the same settings and data with more steps continue the run
    more = train_cli("vae", "--manifest", manifest, "--out", run, *TINY_CLI[2:], "--max-steps", "3")
    assert more.exit_code == 0, more.output
    assert json.loads((run / "step-00000003.json").read_text())["config"]["data"]["window"] == 8


@pytest.mark.parametrize("setting", ["loop.batch_size=-4", "data.window=0", "loop.lr=0"])
def test_impossible_settings_are_refused_before_training(manifest, tmp_path, setting):
    result = train_cli("vae", "--manifest", manifest, "--out", tmp_path / "run", *TINY_CLI, "--set", setting)
    assert refused(result) and setting.split("=")[0] in result.output and not (tmp_path / "run").exists()


def test_empty_or_broken_manifests_are_one_line_errors(manifest, tmp_path):
    from posetalk_data.manifest import filter_manifest

    filter_manifest(manifest, "duration < 0", tmp_path / "none.json")          # 0 samples
    (tmp_path / "broken.json").write_text("{not json")
    for bad in (tmp_path / "none.json", tmp_path / "broken.json", tmp_path):
        for kind in ("vae", "pld"):
            result = train_cli(kind, "--manifest", bad, "--out", tmp_path / f"run-{kind}", *TINY_CLI)
            assert refused(result), (kind, bad, result.output)
