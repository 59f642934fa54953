"""Builds that read and write object storage: a real S3 server (moto's, on a local port), the CLI in subprocesses,
a kill -9 and a resume, and a two-node Ray cluster whose worker node runs in another working directory. The
outputs must be byte for byte those of a local build."""
from __future__ import annotations

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

from conftest import link

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
