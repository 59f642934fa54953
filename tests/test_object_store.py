"""Builds that read and write object storage: a real S3 server (moto's, on a local port), the CLI in subprocesses,
a kill -9 and a resume, and a two-node Ray cluster whose worker node runs in another working directory. The
outputs must be byte for byte those of a local build."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posetalk_data import storage
from posetalk_data.cli import app
from posetalk_data.storage import CRASH_ENV

from conftest import TINY_POSE, link

OVERRIDES = ["facetrack.crop_size=64", "write.videos_per_shard=1"]
GRID = ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg")


def cli_build(src: str, out: str, *, crash_at: str | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "posetalk_data.cli", "build", "--src", "folder", "--input", src, "--out", out,
            "--workers", "0", *[a for o in OVERRIDES for a in ("--set", o)]]
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV} | ({CRASH_ENV: crash_at} if crash_at else {})
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


def outputs(out) -> dict[str, bytes]:
    """The manifest and shard bytes of a build, wherever it is."""
    names = ["manifest.json", *(f"shards/{n}" for n in storage.listdir(storage.join(out, "shards")))]
    return {name: storage.read_bytes(storage.join(out, name)) for name in names}


@pytest.fixture(scope="module")
def local_build(samples, tmp_path_factory) -> Path:
    """The same two clips built from a local folder to a local folder."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    root = tmp_path_factory.mktemp("store_in")
    for name in GRID:
        link(samples / "videos" / name, root / name)
    out = tmp_path_factory.mktemp("store_local") / "build"
    build(folder_specs(root), out, load_config(None, OVERRIDES), source="folder", root=root, workers=0)
    return out


@pytest.fixture(scope="module")
def killed_and_resumed(grid_bucket) -> tuple[str, subprocess.CompletedProcess, dict, subprocess.CompletedProcess]:
    """An s3:// -> s3:// build killed (SIGKILL) between its two shard uploads, then run again: (out, the killed
    run, what it left in the bucket, the resumed run)."""
    out = "s3://grid/builds/killed"
    killed = cli_build(grid_bucket, out, crash_at="write:posetalk-000001.tar")   # group 0 done, shard 1 not put
    left = storage.find(out)
    return out, killed, left, cli_build(grid_bucket, out)


def test_s3_to_s3_build_killed_and_resumed_equals_the_local_build(killed_and_resumed, local_build):
    out, killed, left, again = killed_and_resumed
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "shards/posetalk-000000.tar" in left and "manifest.json" not in left
    assert not any(name.startswith("shards/posetalk-000001") for name in left)    # never half an object
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming: 1 of 2 videos" in again.stderr
    assert outputs(out) == outputs(local_build)          # same manifest and shard bytes as on a local disk
    verified = CliRunner().invoke(app, ["manifest", "verify", out])
    assert verified.exit_code == 0, verified.output


def test_a_manifest_in_a_bucket_is_used_by_its_url(killed_and_resumed, local_build):
    """filter and report on a manifest URL; the derived manifest in the bucket verifies and reads."""
    from posetalk_data.reading import read_samples

    out = killed_and_resumed[0]
    runner = CliRunner()
    filtered = runner.invoke(app, ["manifest", "filter", out, "--where", "video_id == 'grid_lbbc2a.mpg'",
                                   "--out", "s3://grid/derived/one.json"])
    assert filtered.exit_code == 0, filtered.output
    assert runner.invoke(app, ["manifest", "verify", "s3://grid/derived/one.json"]).exit_code == 0
    assert [key for key, _ in read_samples("s3://grid/derived/one.json")] == \
        [key for key, _ in read_samples(local_build / "manifest.json") if "lbbc2a" in key]
    reported = runner.invoke(app, ["report", "--manifest", f"{out}/manifest.json"])
    assert reported.exit_code == 0 and storage.is_file(f"{out}/report.html"), reported.output


def model_cli(module: str, *args) -> object:
    app = {"train": "posetalk_models.cli.train", "generate": "posetalk_models.cli.generate"}[module]
    return CliRunner().invoke(__import__(app, fromlist=["app"]).app, [str(a) for a in args])


def test_training_streams_a_manifest_in_a_bucket_by_its_url(killed_and_resumed, local_build, tmp_path):
    """posetalk-train from the s3:// manifest (its shards checked in full with --verify, then streamed from the
    bucket) trains the very weights a training from the local build's manifest does; the run records the URL."""
    from safetensors.torch import load_file

    url = f"{killed_and_resumed[0]}/manifest.json"
    sets = [x for o in (*TINY_POSE, "loop.tensorboard=false") for x in ("--set", o)]
    runs = {}
    for name, manifest in (("s3", url), ("local", local_build / "manifest.json")):
        result = model_cli("train", "vae", "--tiny", "--manifest", manifest, "--out", tmp_path / name, "--max-steps",
                           "2", "--verify", *sets)
        assert result.exit_code == 0, result.output
        runs[name] = tmp_path / name / "step-00000002.safetensors"
    sidecar = json.loads(runs["s3"].with_suffix(".json").read_text())
    assert sidecar["manifest"] == url and sidecar["manifest_sha256"] == storage.sha256_of(url)
    s3, local = load_file(runs["s3"]), load_file(runs["local"])
    assert s3.keys() == local.keys() and all((s3[k] == local[k]).all() for k in s3)
    missing = model_cli("train", "vae", "--tiny", "--manifest", "s3://grid/builds/none/manifest.json", "--out",
                        tmp_path / "none")
    assert missing.exit_code == 2 and missing.output.strip() == \
        "error: --manifest s3://grid/builds/none/manifest.json: no such file"
    refused = model_cli("train", "vae", "--tiny", "--manifest", url, "--out", "s3://grid/runs/vae")
    assert refused.exit_code == 2 and "give a local folder" in refused.output
    assert not (Path("s3:") / "grid").exists()         # nothing written to a local folder named like the URL


def test_generate_takes_its_reference_video_from_a_bucket(killed_and_resumed, grid_bucket, samples, tmp_path):
    """A CoarseNet trained one step from the s3:// manifest (the video models' data path: frames decoded from the
    store's shards), then posetalk-generate --pose-from s3://...: the reference is downloaded for the face tracker
    and its pose copied."""
    import numpy as np

    from posetalk_models.generate.faces import extraction_config, face_tracks
    from posetalk_models.runs import load_cascade

    trained = model_cli("train", "coarse", "--tiny", "--manifest", f"{killed_and_resumed[0]}/manifest.json", "--out",
                        tmp_path / "coarse", "--max-steps", "1", "--set", "loop.progress=false", "--set",
                        "loop.tensorboard=false")
    assert trained.exit_code == 0, trained.output
    reference = f"{grid_bucket}/grid_bbaf2n.mpg"
    base = ["--image", samples / "images" / "liveportrait_d19.jpg", "--audio", samples / "videos" / "grid_lbbc2a.mpg",
            "--generator", tmp_path / "coarse"]
    out = tmp_path / "talk.mp4"
    result = model_cli("generate", *base, "--pose-from", reference, "--out", out)
    assert result.exit_code == 0, result.output
    info, motion = json.loads(out.with_suffix(".json").read_text()), np.load(out.with_suffix(".npy"))
    pipeline = load_cascade(tmp_path / "coarse")[1]["pipeline"]
    track = face_tracks(samples / "videos" / "grid_bbaf2n.mpg", extraction_config(pipeline, single_face=False))[0]
    assert info["mode"] == "reference" and info["reference"] == {"video": reference, "frames": len(track.frames)}
    n = min(len(track.frames), len(motion))
    assert np.allclose(motion[:n, :7] - motion[0, :7], track.angles()[:n] - track.angles()[0], atol=1e-3)
    missing = model_cli("generate", *base, "--pose-from", f"{grid_bucket}/none.mp4", "--out", tmp_path / "no.mp4")
    assert missing.exit_code == 2 and missing.output.strip() == \
        f"error: --pose-from {grid_bucket}/none.mp4: no such file"


def test_datasets_loads_a_build_in_a_bucket_with_its_card(killed_and_resumed, local_build, tmp_path, monkeypatch):
    """datasets' webdataset loader reads the shards from s3:// (fsspec, the endpoint from AWS_ENDPOINT_URL) with the
    configs and features of the card in the bucket (load_args; load_dataset(path) itself takes a local folder or a
    Hub name only), downloaded and streamed: streaming passes block_size to s3fs, which load_args's session
    absorbs; the streamed dataset pickles (a DataLoader's spawned workers get it so)."""
    datasets = pytest.importorskip("datasets")
    import pickle

    import pyarrow.parquet as pq

    from posetalk_data.dataset_card import load_args

    # datasets' offline switch also refuses every fsspec URL; the store here is a local port, and the Hub stays
    # off for huggingface_hub (HF_HUB_OFFLINE is left set)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    out = killed_and_resumed[0]
    args = load_args(out)
    assert args["data_files"] == {"train": [f"{out}/shards/*.tar"]}
    keys = sorted(pq.read_table(local_build / "samples.parquet")["key"].to_pylist())
    ds = datasets.load_dataset("webdataset", split="train", cache_dir=str(tmp_path), **args)
    assert ds.num_rows == len(keys) == 2 and ds.features == args["features"]
    assert sorted(ds["__key__"]) == keys == sorted(row["meta.json"]["key"] for row in ds)
    streamed = pickle.loads(pickle.dumps(datasets.load_dataset("webdataset", split="train", streaming=True,
                                                               **load_args(out))))
    rows = list(streamed)
    assert [r["__key__"] for r in rows] == keys and rows[0]["meta.json"] == ds[0]["meta.json"]
    assert rows[0]["video.mp4"] == ds[0]["video.mp4"]


def test_unreachable_store_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")     # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["manifest", "verify", "s3://nowhere/build"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error:" in result.output and len(result.output.strip().splitlines()) <= 3


CLUSTER = r"""
import io, json, os, sys, tempfile
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
here = os.getcwd()
os.chdir(tempfile.mkdtemp(prefix="worker-node-"))      # the second node starts in another working directory
cluster.add_node(num_cpus=1)
os.chdir(here)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()

@ray.remote(num_cpus=0)
def cwd():
    return os.getcwd()

nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
cwds = ray.get([cwd.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                for n in nodes])

from posetalk_data.build import build
from posetalk_data.config import load_config
from posetalk_data.sources.folder import url_specs

src, out = sys.argv[1], sys.argv[2]
specs, sizes = url_specs(src)
log = io.StringIO()
build(specs, out, load_config(None, json.loads(sys.argv[3])), source="folder", root=src, workers=2,
      address=cluster.address, sizes=sizes, console=Console(file=log, width=200))
ray.shutdown()

from posetalk_data.ray_start import ensure_ray   # a build without --ray-address, with this cluster still up
local = ensure_ray(None, 1).get_runtime_context().gcs_address
print(json.dumps({"nodes": len(nodes), "cwds": cwds, "driver_cwd": here, "log": log.getvalue()[-3000:],
                  "cluster": cluster.address, "local": local}))
ray.shutdown()
cluster.shutdown()
"""


def test_two_node_cluster_builds_s3_to_s3_with_the_same_bytes(grid_bucket, local_build, tmp_path):
    """Two Ray nodes of one CPU each, the second in another working directory: one video worker on each, the
    clips passed by object reference, each shard written by the task owning its group; same bytes as locally."""
    out = "s3://grid/builds/cluster"
    run = subprocess.run([sys.executable, "-c", CLUSTER, grid_bucket, out, json.dumps(OVERRIDES)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                              "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2 and len(set(report["cwds"])) == 2
    assert "2 workers on 2 Ray node(s)" in report["log"], report["log"]
    assert outputs(out) == outputs(local_build)
    assert report["local"] != report["cluster"]     # a local build starts its own Ray, never joins this cluster


CELEBV_CLIP, CELEBV_OTHER = "WDapzpFJ50U_2_0", "oC9r-CTbToE_0_0"        # two entries of the real clip info


@pytest.fixture(scope="module")
def celebv_tree(s3_server, samples, tmp_path_factory) -> tuple[Path, str]:
    """The real CelebV-Text clip info with one mirrored clip: a silent <clip>.mp4 and its audio as <clip>.m4a (as
    the authors' mirror ships them), and action texts; the same tree on disk and in s3://celebv. (local, URL)"""
    import s3fs

    metadata = samples.parent / "metadata" / "celebv-text" / "celebvtext_info.json"
    if not metadata.is_file():
        pytest.skip(f"real dataset metadata not found at {metadata}")
    root = tmp_path_factory.mktemp("celebv")
    link(metadata, root / "meta" / "celebvtext_info.json")
    grid = samples / "videos" / "grid_lbbc2a.mpg"
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(grid)]
    (root / "clips").mkdir()
    subprocess.run([*ffmpeg, "-an", "-c:v", "libx264", "-preset", "ultrafast",
                    str(root / "clips" / f"{CELEBV_CLIP}.mp4")], check=True)
    subprocess.run([*ffmpeg, "-vn", "-c:a", "aac", str(root / "clips" / f"{CELEBV_CLIP}.m4a")], check=True)
    for clip, text in ((CELEBV_CLIP, "She talks.\nShe nods.\n"), (CELEBV_OTHER, "He turns left.\n")):
        (root / "texts" / "action_dur").mkdir(parents=True, exist_ok=True)
        (root / "texts" / "action_dur" / f"{clip}.txt").write_text(text)
    s3fs.S3FileSystem().put(str(root) + "/", "celebv/", recursive=True)
    return root, "s3://celebv"


def test_celebv_text_root_in_a_bucket(celebv_tree, tmp_path):
    """--src celebv-text --root s3://...: one listing of the store gives the scan a local root gives (the real
    clip info, texts, the mirrored clip and its separate audio); the build's worker downloads the clip and its
    audio, and the manifest records the store paths relative to the root."""
    import pyarrow.parquet as pq

    from posetalk_data.sources import celebv_text

    root, url = celebv_tree
    local, store = celebv_text.scan(root, probe=False), celebv_text.scan(url)
    assert store.clips == local.clips and len(store.clips) == 43
    assert store.problems == local.problems and store.counts == local.counts and store.metadata == local.metadata
    [spec] = store.specs
    assert (spec.video_id, spec.path, spec.audio_path) == (CELEBV_CLIP, f"{url}/clips/{CELEBV_CLIP}.mp4",
                                                           f"{url}/clips/{CELEBV_CLIP}.m4a")
    assert spec.extra == local.specs[0].extra and spec.extra["prompts"] == ["She talks.", "She nods."]
    with pytest.raises(celebv_text.SourceError, match="--download saves videos under --root"):
        celebv_text.scan(url, download=True)
    out = f"{url}/builds/one"
    run = subprocess.run([sys.executable, "-m", "posetalk_data.cli", "build", "--src", "celebv-text", "--root", url,
                          "--out", out, "--workers", "0", "--profile", "offline",
                          *[a for o in OVERRIDES for a in ("--set", o)]], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    from posetalk_data.reading import read_samples

    [(key, sample)] = list(read_samples(f"{out}/manifest.json"))
    meta = json.loads(sample["meta.json"])
    assert key.startswith("celebv-text_WDapzpFJ50U_2_0") and meta["video_id"] == CELEBV_CLIP
    assert meta["audio_source"] == f"{CELEBV_CLIP}.m4a" and len(sample["audio.flac"]) > 1000   # fetched by the worker
    assert json.loads(sample["text.json"])["prompts"] == ["She talks.", "She nods."]
    [row] = pq.read_table(io.BytesIO(storage.read_bytes(f"{out}/samples.parquet"))).to_pylist()
    assert row["source_path"] == f"clips/{CELEBV_CLIP}.mp4"        # relative to the root URL: portable
    assert CliRunner().invoke(app, ["manifest", "verify", out]).exit_code == 0
