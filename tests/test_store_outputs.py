"""The model commands' outputs and runs in a store (issue 20): posetalk-generate, posetalk-pose generate,
posetalk-eval and posetalk-train eval write to s3:// and read their runs from s3:// through the CLI, against the
session's S3 server (moto's, on a local port) and its tiny trained runs; the output guards hold there as on disk, and
training run folders stay local."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from posetalk_data import storage

from test_hostile_generate import FFMPEG, refused

BUCKET = "s3://outs"


def cli(command: str, *args):
    """posetalk-<command> in-process: generate, pose (posetalk-pose), eval, train."""
    module, app = {"pose": ("generate", "pose_app")}.get(command, (command, "app"))
    app = getattr(__import__(f"posetalk_models.cli.{module}", fromlist=[app]), app)
    return CliRunner().invoke(app, [str(a) for a in args])


def hashes(prefix: str) -> dict[str, str]:
    return {name: storage.sha256_of(storage.join(prefix, name)) for name in storage.find(prefix)}


@pytest.fixture(scope="module")
def store(s3_server, video_runs, pose_runs, grid_build, samples, tmp_path_factory) -> dict:
    """s3://outs/runs/{coarse,pld}: copies of the session's tiny runs; 1 s of speech; the run cache in a temp folder
    (POSETALK_CACHE) for the module."""
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("outs")
    fs.put(str(video_runs / "coarse") + "/", "outs/runs/coarse/", recursive=True)
    fs.put(str(pose_runs / "pld") + "/", "outs/runs/pld/", recursive=True)
    root = tmp_path_factory.mktemp("store_outputs")
    speech = root / "speech.wav"
    subprocess.run([*FFMPEG, "-i", str(samples / "audio" / "hallo_1.wav"), "-t", "1", str(speech)], check=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("POSETALK_CACHE", str(root / "cache"))
    yield {"audio": speech, "image": samples / "images" / "liveportrait_d19.jpg", "root": root,
           "coarse": f"{BUCKET}/runs/coarse", "pld": f"{BUCKET}/runs/pld", "pld_manifest": grid_build / "manifest.json"}
    patch.undo()


def test_generate_writes_to_the_store_from_a_run_in_the_store(store, video_runs, tmp_path, monkeypatch):
    """--generator s3://... and --out s3://...: the same video, pose and weights hashes as from the local run to a
    local file; the store gets mp4, npy and json and nothing else (no temporary names)."""
    base = ["--image", store["image"], "--audio", store["audio"]]
    local = tmp_path / "talk.mp4"
    assert cli("generate", *base, "--generator", video_runs / "coarse", "--out", local).exit_code == 0
    out = f"{BUCKET}/talk/talk.mp4"
    result = cli("generate", *base, "--generator", store["coarse"], "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(storage.listdir(f"{BUCKET}/talk")) == ["talk.json", "talk.mp4", "talk.npy"]
    info, mine = storage.read_json(f"{BUCKET}/talk/talk.json"), json.loads(local.with_suffix(".json").read_text())
    assert info["generator"]["run"] == store["coarse"]
    assert info["generator"]["sha256"] == mine["generator"]["sha256"] and info["frames"] == mine["frames"] == 25
    with storage.local_copy(f"{BUCKET}/talk/talk.npy") as npy:
        assert np.array_equal(np.load(npy), np.load(local.with_suffix(".npy")))
    assert storage.read_bytes(out)[4:8] == b"ftyp" and storage.size(out) > 1000
    # its own earlier outputs are replaced without --force (recognised by the sidecar in the store)
    again = cli("generate", *base, "--generator", store["coarse"], "--out", out, "--natural-motion", "2")
    assert again.exit_code == 0, again.output
    assert storage.read_json(f"{BUCKET}/talk/talk.json")["natural_motion_deg"] == 2


def test_generate_guards_its_outputs_in_the_store(store, tmp_path, monkeypatch):
    """In the store as on disk: an --out that is an input or inside an input run is refused; a foreign object is
    replaced only with --force; a failed or interrupted render uploads nothing."""
    from posetalk_data.media import MediaError
    from posetalk_models.generate import render

    base = ["--image", store["image"], "--audio", store["audio"], "--generator", store["coarse"]]
    storage.write_atomic(f"{BUCKET}/refs/ref.mp4", (store["root"] / "speech.wav").read_bytes())
    refused(cli("generate", *base, "--pose-from", f"{BUCKET}/refs/ref.mp4", "--out", f"{BUCKET}/refs/ref.mp4"),
            "would overwrite the input --pose-from")
    refused(cli("generate", *base, "--out", f"{store['coarse']}/talk.mp4", "--force"), "lies inside --generator")
    foreign = f"{BUCKET}/mine/talk.json"
    storage.write_atomic(foreign, b'{"made": "by hand"}')
    before = hashes(f"{BUCKET}/mine")
    refused(cli("generate", *base, "--out", f"{BUCKET}/mine/talk.mp4"), f"{foreign} exists and was not written by",
            "--force")

    def broken_mux(video, audio, target, *, seconds):
        raise MediaError("muxing the audio failed: simulated")

    def interrupted_mux(video, audio, target, *, seconds):
        raise KeyboardInterrupt

    for mux in (broken_mux, interrupted_mux):
        with monkeypatch.context() as patch:
            patch.setattr(render, "mux_audio", mux)
            assert cli("generate", *base, "--out", f"{BUCKET}/mine/talk.mp4", "--force").exit_code != 0
        assert hashes(f"{BUCKET}/mine") == before                    # nothing uploaded, nothing half there
    assert cli("generate", *base, "--out", f"{BUCKET}/mine/talk.mp4", "--force").exit_code == 0
    assert storage.read_json(foreign)["command"] == "posetalk-generate"


def test_pose_generate_and_pld_eval_read_the_run_from_the_store(store, pose_runs, tmp_path):
    """posetalk-pose generate --run s3://... --out s3://... writes npy, png and json there (the same poses as from
    the local run); posetalk-train eval --run s3://... writes its figures to --out s3://...; a URL without a run is
    one line."""
    args = ["--audio", store["audio"], "--steps", "4", "--seed", "1"]
    assert cli("pose", "generate", "--run", pose_runs / "pld", *args, "--out", tmp_path / "p").exit_code == 0
    result = cli("pose", "generate", "--run", store["pld"], *args, "--out", f"{BUCKET}/poses/p")
    assert result.exit_code == 0, result.output
    assert storage.listdir(f"{BUCKET}/poses") == ["p.json", "p.npy", "p.png"]
    with storage.local_copy(f"{BUCKET}/poses/p.npy") as npy:
        assert np.array_equal(np.load(npy), np.load(tmp_path / "p.npy"))
    assert storage.read_json(f"{BUCKET}/poses/p.json")["run"] == store["pld"]
    figures = f"{BUCKET}/pld-eval/figures.json"
    evaluated = cli("train", "eval", "--run", store["pld"], "--manifest", store["pld_manifest"], "--windows", "2",
                    "--samples", "2", "--steps", "2", "--out", figures)
    assert evaluated.exit_code == 0, evaluated.output
    assert storage.read_json(figures)["run"] == store["pld"]
    refused(cli("pose", "generate", "--run", f"{BUCKET}/runs/none", *args, "--out", tmp_path / "q"),
            f"{BUCKET}/runs/none: no step-*.safetensors checkpoint there")
    storage.write_atomic(f"{BUCKET}/runs/broken/step-00000001.safetensors", b"not weights")
    storage.write_atomic(f"{BUCKET}/runs/broken/step-00000001.json", b"not json")
    refused(cli("pose", "generate", "--run", f"{BUCKET}/runs/broken", *args, "--out", tmp_path / "q"),
            f"{BUCKET}/runs/broken/step-00000001.json: damaged checkpoint sidecar")   # the store's name, not the cache's


def test_eval_writes_its_report_to_the_store(store, video_build):
    """posetalk-eval --generator s3://... --out s3://...: metrics.json, metrics.md and the strip in the store, the
    run recorded by its URL; an earlier report of its own is replaced, another's file only with --force."""
    out = f"{BUCKET}/eval"
    args = ["--manifest", video_build / "held.json", "--generator", store["coarse"], "--max-clips", "1",
            "--max-frames", "10"]
    result = cli("eval", *args, "--out", out)
    assert result.exit_code == 0, result.output
    files = storage.find(out)
    assert {"metrics.json", "metrics.md"} <= set(files) and len([f for f in files if f.startswith("strips/")]) == 1
    metrics = storage.read_json(f"{out}/metrics.json")
    assert metrics["settings"]["generator"] == store["coarse"] and "model" in metrics["rows"]
    assert "| model |" in storage.read_text(f"{out}/metrics.md")
    assert cli("eval", *args, "--out", out).exit_code == 0             # its own report: replaced
    storage.write_atomic(f"{BUCKET}/other/metrics.md", "a table someone wrote\n")
    refused(cli("eval", *args, "--out", f"{BUCKET}/other"), "metrics.md exists and was not written by posetalk-eval",
            "--force")
    assert storage.read_text(f"{BUCKET}/other/metrics.md") == "a table someone wrote\n"
    refused(cli("eval", *args, "--out", f"{store['coarse']}/eval", "--force"), "lies inside --generator")


def test_training_run_folders_stay_local_in_one_line(store, video_build):
    result = cli("train", "vae", "--tiny", "--manifest", video_build / "train.json", "--out", f"{BUCKET}/runs/vae")
    refused(result, f"--out {BUCKET}/runs/vae: a training run folder stays on this machine's disk",
            "resumed in place", "give a local folder")
    assert not storage.exists(f"{BUCKET}/runs/vae")
