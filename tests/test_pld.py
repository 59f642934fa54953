"""Pose Latent Diffusion: training from real shards, overfitting, sampling in every mode, guidance, checkpoints,
long-sequence stitching and `posetalk-pose generate` with the training data's feature extractors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from posetalk_models.train.config import load_train_config
from posetalk_models.data.windows import loader, normalise
from posetalk_models.generate.pose import (FeatureMismatch, chain_translation, check_same, generate_poses, stitch,
                                      window_starts)
from posetalk_models.nets.pld import MODES, PLDConfig, PoseLatentDiffusion
from posetalk_models.generate.pose import load_pld
from posetalk_models.train.pose_pld import train_pld

from conftest import TINY_POSE, tiny_hubert  # the tiny settings of the shared `pose_runs` fixture

TINY = TINY_POSE


@pytest.fixture(scope="module")
def manifest(grid_build):
    return grid_build / "manifest.json"


@pytest.fixture(scope="module")
def runs(pose_runs):
    return pose_runs


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_goes_down_and_the_run_records_what_generation_needs(runs):
    rows = metrics(runs / "pld")
    assert rows[0]["step"] == 5 and rows[-1]["step"] == 40
    assert np.mean([r["mse"] for r in rows[-2:]]) < 0.8 * rows[0]["mse"], rows  # starts at ~1 (zero-init output)
    sidecar = json.loads((runs / "pld" / "step-00000040.json").read_text())
    assert sidecar["kind"] == "pld" and sidecar["stats"]["channels"][0] == "yaw"
    assert sidecar["features"]["speech"]["member"] == "mel.npy"
    assert sidecar["features"]["speech"]["versions"]["n_mels"] == 80
    assert sidecar["features"]["text"]["versions"]["weights_sha256"]
    model = sidecar["config"]["model"]
    assert (model["speech_dim"], model["text_dim"], model["window"]) == (80, 384, 16)
    assert (runs / "pld" / "vae.safetensors").is_file()  # the run carries its VAE


def test_checkpoint_round_trips_and_resumes(runs, manifest, tmp_path):
    run = tmp_path / "pld"
    shutil.copytree(runs / "pld", run)
    pld, vae, sidecar = load_pld(run)
    z = torch.randn(2, pld.cfg.latent_tokens, pld.cfg.latent_dim)
    t, text, audio = torch.tensor([10, 900]), torch.randn(2, 384), torch.randn(2, 16, 80)
    again, _, _ = load_pld(run / "step-00000040.safetensors")
    with torch.no_grad():
        assert torch.equal(pld.denoiser(z, t, text, audio), again.denoiser(z, t, text, audio))
    assert float(pld.latent_std.min()) > 0 and not torch.all(pld.latent_std == 1)  # latent scale was measured
    cfg = load_train_config("pld", None, [*TINY, "loop.max_steps=50", "model.layers=3", "loop.lr=2e-3"])
    last = train_pld(manifest, run, cfg)  # resumes: no --vae needed, the run has its copy
    steps = [r["step"] for r in metrics(run)]
    assert last.name == "step-00000050.safetensors" and steps[-2:] == [45, 50] and steps.count(40) == 1
    resumed, _, _ = load_pld(run)
    assert torch.equal(resumed.latent_std, pld.latent_std)  # statistics come back with the weights


def test_a_new_run_needs_a_vae(manifest, tmp_path):
    from posetalk_models.cli.train import app

    result = CliRunner().invoke(app, ["pld", "--manifest", str(manifest), "--out", str(tmp_path / "pld"),
                                      "--max-steps", "2", *sum((["--set", s] for s in TINY), [])])
    assert result.exit_code == 2 and "--vae" in result.output


def test_overfits_two_windows(runs, manifest):
    pld, vae, sidecar = load_pld(runs / "pld")
    batch = next(iter(loader(manifest, load_train_config("pld", None, TINY).data.model_copy(update={"seed": 1}),
                             batch_size=2)))
    with torch.no_grad():
        z = vae.encode(normalise(batch["pose"], sidecar["stats"]))[0]
    torch.manual_seed(0)
    model = PoseLatentDiffusion(PLDConfig(**{**sidecar["config"]["model"], "dropout": 0.0}))
    model.set_latent_stats(torch.cat([pld.latent_mean[None], pld.latent_mean[None] + pld.latent_std[None]]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> float:
        torch.manual_seed(123)  # the same timesteps and noise each time
        with torch.no_grad():
            return float(np.mean([model(z, batch["text"], batch["speech"])["loss"].item() for _ in range(8)]))

    first = loss()
    for _ in range(300):
        value = model(z, batch["text"], batch["speech"])["loss"]
        opt.zero_grad()
        value.backward()
        opt.step()
    final = loss()
    assert first > 0.9 and final < 0.25 * first, (first, final)  # a fresh model predicts zero noise: ~1


@pytest.mark.parametrize("mode", MODES)
def test_sampling_shapes_and_guidance_in_every_mode(runs, mode):
    pld, vae, _ = load_pld(runs / "pld")
    text, audio = torch.randn(3, 384), torch.randn(3, 16, 80)

    def sample(guidance):
        return pld.sample(3, text, audio, mode=mode, guidance=guidance, steps=8,
                          generator=torch.Generator().manual_seed(0))

    plain, guided = sample(0.0), sample(3.0)
    assert plain.shape == guided.shape == (3, pld.cfg.latent_tokens, pld.cfg.latent_dim)
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided, atol=1e-4)
    assert torch.equal(plain, sample(0.0))  # reproducible by generator
    assert vae.decode(guided, 16).shape == (3, 16, 10)
    with pytest.raises(ValueError, match="needs"):
        pld.sample(1, None, None, mode=mode, steps=2)


def test_window_starts_cover_any_length():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(41, 16, 4) == [0, 12, 24, 25]
    for n in (17, 33, 100):
        starts = window_starts(n, 16, 6)
        assert starts[-1] + 16 == n and all(b - a <= 10 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError):
        window_starts(40, 16, 16)


def test_stitching_chains_translation_and_blends_angles_without_seams():
    rng = np.random.default_rng(0)
    n, t = 70, 16
    truth = np.cumsum(rng.normal(0, 0.3, (n, 10)), 0).astype(np.float32)
    truth[:, 7:10] -= truth[0, 7:10]                       # translation relative to frame 0
    starts = window_starts(n, t, 6)
    windows = []
    for a in starts:   # what the model produces: window-relative translation, angles absolute
        w = truth[a:a + t].copy()
        scale = np.exp(truth[a, 9])
        w[:, 7:9] = (truth[a:a + t, 7:9] - truth[a, 7:9]) / scale
        w[:, 9] = truth[a:a + t, 9] - truth[a, 9]
        windows.append(w)
    np.testing.assert_allclose(stitch(np.stack(windows), starts, n), truth, atol=1e-4)  # exact when they agree

    offsets = np.stack([w + 5.0 * k for k, w in enumerate(windows)])   # disagreeing windows: jumps of 5 deg
    seq = stitch(offsets, starts, n)
    assert np.abs(np.diff(seq[:, :7], axis=0)).max() < np.abs(np.diff(truth[:, :7], axis=0)).max() + 5.0 / 6 + 1e-3
    assert chain_translation(windows[0], truth, 0) is not windows[0]


def test_long_sequences_from_the_model(runs):
    pld, vae, sidecar = load_pld(runs / "pld")
    speech, text = np.random.default_rng(1).normal(size=(90, 80)).astype(np.float32), np.ones(384, np.float32)
    poses = generate_poses(pld, vae, sidecar["stats"], 90, speech, text, mode="both", steps=6, samples=2)
    assert poses.shape == (2, 90, 10) and np.isfinite(poses).all()
    assert not np.allclose(poses[0], poses[1])                        # two samples differ
    short = generate_poses(pld, vae, sidecar["stats"], 7, speech[:7], None, mode="audio", steps=4)
    assert short.shape == (1, 7, 10)


def test_feature_versions_must_match():
    recorded = {"backend": "mel", "n_mels": 80, "source": "a", "revision": "x"}
    check_same("speech", recorded, {**recorded, "source": "b", "revision": None})  # location differs only
    with pytest.raises(FeatureMismatch, match="n_mels: trained with 80, here 64"):
        check_same("speech", recorded, {**recorded, "n_mels": 64})


def test_posetalk_pose_generate(runs, samples, tmp_path):
    from posetalk_models.cli.generate import pose_app as app

    audio = samples / "audio" / "hallo_1.wav"
    out = tmp_path / "gen" / "poses.npy"
    result = CliRunner().invoke(app, ["generate", "--run", str(runs / "pld"), "--audio", str(audio), "--text",
                                      "nods slowly", "--steps", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    poses, info = np.load(out), json.loads(out.with_suffix(".json").read_text())
    duration = float(json.loads(__import__("subprocess").run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(audio)],
        capture_output=True, text=True, check=True).stdout)["format"]["duration"])
    assert poses.shape == (int(duration * 25 + 0.5), 10)      # round(duration x 25)
    assert info["mode"] == "both" and info["channels"][3] == "gaze_l_yaw"
    assert out.with_suffix(".png").stat().st_size > 10_000

    bad = tmp_path / "bad"  # a run whose prompts were embedded by other weights: refused, saying what differs
    shutil.copytree(runs / "pld", bad)
    sidecar_path = sorted(bad.glob("step-*.json"))[-1]
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["features"]["text"]["versions"]["weights_sha256"] = "0" * 64
    sidecar_path.write_text(json.dumps(sidecar))
    result = CliRunner().invoke(app, ["generate", "--run", str(bad), "--audio", str(audio), "--text", "nods",
                                      "--out", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and f"weights_sha256: trained with '{'0' * 64}'" in result.output
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("audio", ["missing.wav", "empty.wav", "notes.wav"])
def test_posetalk_pose_generate_refuses_bad_audio_in_one_line(runs, tmp_path, audio):
    from posetalk_models.cli.generate import pose_app as app

    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio\n")
    result = CliRunner().invoke(app, ["generate", "--run", str(runs / "pld"), "--audio", str(tmp_path / audio),
                                      "--out", str(tmp_path / "p.npy")])
    assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output
    assert not (tmp_path / "p.npy").exists()


def test_pose_modes_are_checked_first_and_against_the_run(runs, samples, tmp_path):
    """The mode rules live in generate.pose, shared by the commands and the evaluator: an unknown mode or a text mode
    without a prompt is one line before any run is read; a run trained without text features refuses the text
    modes (before any extractor is loaded) and the evaluator does not score them."""
    from posetalk_models.cli.generate import pose_app as app
    from posetalk_models.generate.pose import pld_poses, run_modes

    audio = samples / "audio" / "hallo_1.wav"
    for mode, words in (("sideways", "--mode sideways: choose audio, text or both"),
                        ("text", "PLD mode text needs a prompt")):
        result = CliRunner().invoke(app, ["generate", "--run", str(tmp_path / "no-run"), "--audio", str(audio),
                                          "--mode", mode, "--out", str(tmp_path / "p.npy")])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output

    textless = tmp_path / "textless"       # the same run, as if its manifest had had no text features
    shutil.copytree(runs / "pld", textless)
    for path in textless.glob("step-*.json"):
        sidecar = json.loads(path.read_text())
        del sidecar["features"]["text"]
        path.write_text(json.dumps(sidecar))
    result = CliRunner().invoke(app, ["generate", "--run", str(textless), "--audio", str(audio), "--text", "nods",
                                      "--out", str(tmp_path / "p.npy")])
    assert result.exit_code == 2 and "trained without text features: use --mode audio" in result.output
    assert not (tmp_path / "p.npy").exists()
    pld, vae, sidecar = load_pld(textless)
    assert run_modes(sidecar) == ["audio"] and run_modes(load_pld(runs / "pld")[2]) == list(MODES)
    poses = pld_poses(pld, vae, sidecar, np.zeros(16000, np.float32), 25, "ignored in audio mode", "audio", steps=2)
    assert poses.shape == (25, 10)


def test_generate_out_without_suffix_writes_the_path_it_prints(runs, samples, tmp_path):
    from posetalk_models.cli.generate import pose_app as app

    result = CliRunner().invoke(app, ["generate", "--run", str(runs / "pld"), "--audio",
                                      str(samples / "audio" / "echomimic_echomimic_en.wav"), "--steps", "2",
                                      "--no-plot", "--out", str(tmp_path / "g" / "poses")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{tmp_path / 'g' / 'poses.npy'}:") and (tmp_path / "g" / "poses.npy").is_file()


def tiny_clip(folder):
    import open_clip

    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    folder.mkdir()
    (folder / "posetalk-tiny-clip-pld.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("posetalk-tiny-clip-pld").state_dict(), folder / "tiny.pt")
    return folder / "tiny.pt"


def test_paper_profile_features_hubert_and_clip(runs, grid_build, samples, tmp_path):
    """Shards extended with (tiny, random) HuBERT and CLIP: training picks them, generation recomputes them from
    the same weights and refuses other weights."""
    from posetalk_data.config import load_config
    from posetalk_data.extend import extend
    from posetalk_models.cli.generate import pose_app as app

    build = shutil.copytree(grid_build, tmp_path / "b", ignore=shutil.ignore_patterns(".staging"))
    hubert, clip = tiny_hubert(tmp_path / "hubert", 0), tiny_clip(tmp_path / "clip")
    extend(build / "manifest.json", ["hubert", "clip"], load_config(None, [
        f"speech.local_dir={hubert}", "text.model=posetalk-tiny-clip-pld", "text.pretrained=null",
        f"text.local_path={clip}"]))
    run = tmp_path / "pld"
    train_pld(build / "manifest.json", run, load_train_config("pld", None, [*TINY, "loop.max_steps=3",
                                                                            "model.layers=3"]), vae_run=runs / "vae")
    sidecar = json.loads(sorted(run.glob("step-*.json"))[-1].read_text())
    assert sidecar["features"]["speech"]["member"] == "hubert.npy"
    assert sidecar["features"]["text"]["member"] == "clip_posetalk-tiny-clip-pld.npy"
    assert (sidecar["config"]["model"]["speech_dim"], sidecar["config"]["model"]["text_dim"]) == (32, 24)

    def generate(speech_weights):
        return CliRunner().invoke(app, [
            "generate", "--run", str(run), "--audio", str(samples / "audio" / "hallo_1.wav"), "--text", "nods",
            "--steps", "3", "--no-plot", "--speech-weights", str(speech_weights), "--text-weights", str(clip),
            "--out", str(tmp_path / "poses.npy")])

    result = generate(hubert)
    assert result.exit_code == 0, result.output
    assert np.isfinite(np.load(tmp_path / "poses.npy")).all()
    other = generate(tiny_hubert(tmp_path / "other-hubert", 1))   # same architecture, other weights
    assert other.exit_code == 2 and "speech features differ" in other.output and "weights_sha256" in other.output
