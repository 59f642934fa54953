"""Crash safety: a build killed with SIGKILL and run again ends with the same manifest and shard bytes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from posetalk_data.build import build
from posetalk_data.config import load_config
from posetalk_data.shards import StagingMismatch
from posetalk_data.sources.folder import folder_specs
from posetalk_data.storage import CRASH_ENV

OVERRIDES = ["facetrack.crop_size=128", "write.videos_per_shard=1"]


@pytest.fixture(scope="module")
def inputs(samples, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_in")
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg", "liveportrait_d20.mp4"):
        (root / name).symlink_to(samples / "videos" / name)
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def run_build(inputs: Path, out: Path, *extra: str, crash_at: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "posetalk_data.cli", "build", "--src", "folder", "--input", str(inputs),
            "--out", str(out), "--workers", "0", *[a for o in OVERRIDES for a in ("--set", o)], *extra]
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV} | ({CRASH_ENV: crash_at} if crash_at else {})
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """The same build, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    build(folder_specs(inputs), out, load_config(None, OVERRIDES), source="folder", root=inputs, workers=0)
    return out


def test_kill_9_then_resume_gives_identical_outputs(inputs, reference, tmp_path):
    out = tmp_path / "killed"
    proc = run_build(inputs, out)
    markers = out / ".staging" / "groups"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)      # the driver (and its ffmpeg children) die mid-build
    proc.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"
    assert 2 <= len(list(markers.glob("*.json"))) < 4

    began = time.time()
    assert run_build(inputs, out).wait() == 0
    command_seconds = time.time() - began
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert shard_bytes(out) == shard_bytes(reference)
    assert not list(out.rglob("*.tmp"))
    # the resumed command's start-up: from its process's start to its first video's face tracking
    assert 0 < json.loads((out / "timings.json").read_text())["startup_seconds"] < command_seconds


@pytest.mark.parametrize("point, left", [
    ("write:posetalk-staging.json", ".staging/posetalk-staging.json.tmp"),   # the very first write of a build
    ("write:build.json", ".staging/build.json.tmp"),          # the versions checked, before the first shard
    ("write:posetalk-000001.tar", "shards/posetalk-000001.tar.tmp"),          # one shard written, the next half
    ("write:manifest.json", "manifest.json.tmp"),                             # everything but the manifest
])
def test_kill_9_at_any_moment_then_resume(inputs, reference, tmp_path, point, left):
    """A build killed at each of these moments (SIGKILL, exactly there) and run again with the same command ends
    with the uninterrupted build's manifest and shard bytes."""
    out = tmp_path / "out"
    proc = run_build(inputs, out, crash_at=point)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert (out / left).is_file() and not (out / "manifest.json").exists()

    again = run_build(inputs, out)
    assert again.wait() == 0, again.stderr.read().decode()[-2000:]
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert shard_bytes(out) == shard_bytes(reference)
    assert not list(out.rglob("*.tmp"))


def test_kill_9_of_a_ray_worker_loses_nothing(inputs, reference, ray_session, tmp_path):
    """A worker killed mid-video is replaced and the video redone: the outputs equal the uninterrupted build's."""
    import psutil

    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "RayVideoProcessor.video" in " ".join(proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    out = tmp_path / "out"
    result = build(folder_specs(inputs), out, load_config(None, OVERRIDES), source="folder", root=inputs,
                   workers=2)
    killer.join()
    assert killed, "no busy worker was found to kill"
    assert result.dropped == 1                               # only the broken file
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert shard_bytes(out) == shard_bytes(reference)


def test_retry_failed_reprocesses_only_failures(inputs, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for p in inputs.iterdir():
        (root / p.name).symlink_to(p.resolve()) if p.is_symlink() else (root / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    cfg = load_config(None, OVERRIDES)
    first = build(folder_specs(root), out, cfg, source="folder", root=root, workers=0)
    assert first.dropped == 1 and first.manifest["counts"]["samples"] == 3
    (root / "broken.mp4").unlink()
    (root / "broken.mp4").symlink_to((inputs / "grid_bbaf2n.mpg").resolve())   # the user fixed the file
    again = build(folder_specs(root), out, cfg, source="folder", root=root, workers=0)
    assert again.resumed == 4 and again.kept == 0                            # a plain rerun redoes nothing
    retried = build(folder_specs(root), out, cfg, source="folder", root=root, workers=0, retry_failed=True)
    assert retried.resumed == 3 and retried.kept == 1 and retried.dropped == 0
    assert retried.manifest["counts"]["samples"] == 4 and retried.manifest["counts"]["failures"] == 0
    assert pq.read_table(out / "failures.parquet").num_rows == 0


def test_changed_config_refuses_to_mix_staged_clips(inputs, tmp_path):
    specs = folder_specs(inputs)[:2]
    build(specs, tmp_path, load_config(None, OVERRIDES), source="folder", root=inputs, workers=0)
    with pytest.raises(StagingMismatch, match="--fresh"):
        build(specs, tmp_path, load_config(None, ["facetrack.crop_size=96"]), source="folder", root=inputs,
              workers=0)
    fresh = build(specs, tmp_path, load_config(None, ["facetrack.crop_size=96"]), source="folder", root=inputs,
                  workers=0, fresh=True)
    assert fresh.resumed == 0 and fresh.manifest["pipeline"]["facetrack"]["crop_size"] == 96


def test_resume_may_change_how_the_build_runs(inputs, tmp_path):
    """Model workers and the frame cache change how a build runs, not what it writes: a resume with other values
    reuses the staged clips."""
    specs = folder_specs(inputs)[:2]
    build(specs[:1], tmp_path, load_config(None, OVERRIDES), source="folder", root=inputs, workers=0)
    resumed = build(specs, tmp_path, load_config(None, [*OVERRIDES, "facetrack.frame_cache_mb=0", "models.workers=2"]),
                    source="folder", root=inputs, workers=0)
    assert resumed.resumed == 1 and resumed.kept == 1
