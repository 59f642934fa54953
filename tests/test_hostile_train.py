"""The training commands tried the way a hostile or careless user would (issue 21): data that gives no item, a
frozen stage other than the run's copy, two trainings on one run folder, a shard cut short, damaged checkpoints,
a GPU that is not there, and a training killed while it writes a checkpoint. Each case goes through the CLI and
checks the exit code, the one-line message and that inputs and earlier outputs are unchanged."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import REPO, TINY_POSE, TINY_VIDEO

POSE_SETS = [x for o in (*TINY_POSE, "loop.tensorboard=false") for x in ("--set", o)]
VIDEO_SETS = [x for o in (*TINY_VIDEO, "loop.tensorboard=false") for x in ("--set", o)]


def train(*args):
    from posetalk_models.cli.train import app

    return CliRunner().invoke(app, [str(a) for a in args])


def said(result) -> str:
    return " ".join(result.output.split())


def one_line_error(result) -> bool:
    """Exit 2, one 'error:' line, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") \
        and (result.exception is None or isinstance(result.exception, SystemExit))


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (a run folder, a build): what must not change."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots
            for p in sorted([root] if root.is_file() else root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def within(seconds: float):
    """Fail instead of hanging: a TimeoutError in the main thread after `seconds`."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ data that gives no item
def test_sync_without_a_clip_long_enough_stops_at_once(grid_build, tmp_path):
    before = hashes(grid_build)
    with within(120):
        result = train("sync", "--tiny", "--manifest", grid_build / "manifest.json", "--out", tmp_path / "sync",
                       "--max-steps", "2", *VIDEO_SETS, "--set", "data.sync_offset_min=80")
    assert one_line_error(result), result.output
    assert "data.sync_offset_min" in said(result) and "needs 86 frames" in said(result), said(result)
    assert "longest of the 2 clips has 75" in said(result)
    assert not (tmp_path / "sync").exists() and hashes(grid_build) == before


def test_a_stream_whose_clips_give_no_item_ends_instead_of_waiting(grid_build):
    """The guard every trainer shares: an endless stream in which every clip has given nothing stops."""
    from posetalk_models.data.stream import NoItems, ShardStream

    stream = ShardStream(grid_build / "manifest.json", {"pose.npy"}, lambda sample, rng: [], per_clip=1,
                         shuffle_buffer=4, resample=True, seed=0)
    with within(60), pytest.raises(NoItems, match="none of its 2 clips gives a training item"):
        next(iter(stream))


# ------------------------------------------------------------------ frozen stages
@pytest.fixture(scope="module")
def coarse_run(video_build, tmp_path_factory) -> Path:
    """A 2-step CoarseNet run (the stage a refine run is trained over); read-only."""
    from posetalk_models.train.config import load_train_config
    from posetalk_models.train.coarse import train_coarse

    run = tmp_path_factory.mktemp("hostile") / "coarse"
    train_coarse(video_build / "train.json", run, load_train_config("coarse", None, [
        *TINY_VIDEO, "loop.tensorboard=false", "loop.max_steps=2"]))
    return run


def other_coarse(coarse_run: Path, tmp_path: Path) -> Path:
    """A coarse run like coarse_run with other weights in its last checkpoint (another training)."""
    run = Path(shutil.copytree(coarse_run, tmp_path / "other_coarse"))
    last = sorted(run.glob("step-*.safetensors"))[-1]
    state = load_file(str(last))
    name = sorted(state)[0]
    state[name] = state[name] + 0.01
    save_file(state, str(last))
    return run


def test_refine_refuses_a_coarse_other_than_its_copy(coarse_run, video_build, tmp_path):
    manifest, out = video_build / "train.json", tmp_path / "refine"
    base = ("refine", "--tiny", "--manifest", manifest, "--out", out, "--max-steps", "1", *VIDEO_SETS)
    failed = train(*base, "--coarse", coarse_run, "--set", "data.motion_window=3")   # a failed first attempt
    assert one_line_error(failed) and (out / "coarse.safetensors").is_file(), failed.output
    other = other_coarse(coarse_run, tmp_path)
    before = hashes(out, other, coarse_run)
    result = train(*base, "--coarse", other)
    assert one_line_error(result), result.output
    assert f"--coarse {other} is not the coarse this run was started over" in said(result)
    assert "weights: copied from" in said(result) and "remove coarse.safetensors and coarse.json" in said(result)
    assert hashes(out, other, coarse_run) == before and not list(out.glob("step-*"))
    again = train(*base, "--coarse", coarse_run)      # the stage the copy is of: accepted
    assert again.exit_code == 0, again.output
    assert (out / "step-00000001.safetensors").is_file()


# ------------------------------------------------------------------ locks
def test_a_run_folder_held_by_another_training_is_refused(grid_build, tmp_path):
    out = tmp_path / "vae"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = out / ".lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "now"}))
        args = ("vae", "--tiny", "--manifest", grid_build / "manifest.json", "--out", out, "--max-steps", "1",
                *POSE_SETS)
        before = hashes(out)
        busy = train(*args)
        assert one_line_error(busy) and f"in use by another training (process {holder.pid}" in said(busy), busy.output
        assert hashes(out) == before
    finally:
        holder.kill()
        holder.wait()
    stale = train(*args)        # the holder is gone: reported, not taken over
    assert one_line_error(stale) and f"stale lock: {lock} names process {holder.pid}" in said(stale), stale.output
    assert f"remove {lock}" in said(stale) and hashes(out) == before


# ------------------------------------------------------------------ shards against the manifest
def cut_build(grid_build: Path, tmp_path: Path, *, keep_size_record: bool) -> tuple[Path, str]:
    """A copy of the GRID build whose one shard is cut where its second sample begins (a valid tar of 1 of 2
    samples). keep_size_record False: the manifest's bytes updated to the cut size, so only the count differs."""
    build = Path(shutil.copytree(grid_build, tmp_path / "cut"))
    manifest = json.loads((build / "manifest.json").read_text())
    shard = build / manifest["shards"][0]["path"]
    with tarfile.open(shard) as archive:
        members = archive.getmembers()
    second = next(m for m in members if m.name.split(".")[0] != members[0].name.split(".")[0])
    with open(shard, "r+b") as f:
        f.truncate(second.offset)
    if not keep_size_record:
        manifest["shards"][0]["bytes"] = shard.stat().st_size
        (build / "manifest.json").write_text(json.dumps(manifest))
    return build, manifest["shards"][0]["path"]


@pytest.mark.parametrize("keep_size_record, words", [(True, "bytes, the manifest says"),
                                                     (False, "holds 1 samples, the manifest says 2")])
def test_a_shard_cut_at_a_sample_boundary_is_refused(grid_build, pose_runs, tmp_path, keep_size_record, words):
    build, shard = cut_build(grid_build, tmp_path, keep_size_record=keep_size_record)
    before = hashes(build, pose_runs)
    result = train("vae", "--tiny", "--manifest", build / "manifest.json", "--out", tmp_path / "vae", "--max-steps",
                   "1", *POSE_SETS)
    assert one_line_error(result) and shard in said(result) and words in said(result), result.output
    assert not (tmp_path / "vae").exists()
    evaluated = train("eval", "--run", pose_runs / "pld", "--manifest", build / "manifest.json", "--windows", "2",
                      "--samples", "2", "--steps", "2")
    assert one_line_error(evaluated) and words in said(evaluated), evaluated.output
    assert hashes(build, pose_runs) == before


def test_verify_checks_every_byte_the_cheap_check_does_not(grid_build, tmp_path):
    from posetalk_data.reading import check_shards

    build = Path(shutil.copytree(grid_build, tmp_path / "flipped"))
    manifest = json.loads((build / "manifest.json").read_text())
    shard = build / manifest["shards"][0]["path"]
    with tarfile.open(shard) as archive:
        video = next(m for m in archive.getmembers() if m.name.endswith(".video.mp4"))
    data = bytearray(shard.read_bytes())
    data[video.offset_data + video.size // 2] ^= 0xFF           # same size, same samples, other bytes
    shard.write_bytes(bytes(data))
    check_shards(build / "manifest.json")                      # sizes and counts agree
    result = train("vae", "--tiny", "--manifest", build / "manifest.json", "--out", tmp_path / "vae", "--verify",
                   "--max-steps", "1", *POSE_SETS)
    assert one_line_error(result) and "--verify:" in said(result) and "checksum" in said(result), result.output
    assert not (tmp_path / "vae").exists()


# ------------------------------------------------------------------ damaged checkpoints
def test_a_truncated_checkpoint_is_named_on_resume(pose_runs, grid_build, tmp_path):
    run = Path(shutil.copytree(pose_runs / "vae", tmp_path / "vae"))
    last = sorted(run.glob("step-*.safetensors"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = hashes(run)
    result = train("vae", "--tiny", "--manifest", grid_build / "manifest.json", "--out", run, "--max-steps", "60",
                   *POSE_SETS)
    assert one_line_error(result), result.output
    assert f"{last}: truncated or not a safetensors file" in said(result)
    assert f"move {last.stem}.* out of {run}" in said(result) and hashes(run) == before


@pytest.mark.parametrize("damage, words", [
    (lambda s: {**s, "config": {**s["config"], "model": {**s["config"]["model"], "base": 16}}},
     "the weights do not fit the model its sidecar step-00000002.json describes"),
    (lambda s: {"step": 2}, "damaged checkpoint sidecar (no model kind and config in it)"),
    (None, "damaged checkpoint sidecar, not JSON")])
def test_a_damaged_coarse_run_is_named(coarse_run, video_build, tmp_path, damage, words):
    from posetalk_models.runs import load_cascade
    from posetalk_models.checkpoints import CheckpointError

    coarse = Path(shutil.copytree(coarse_run, tmp_path / "coarse"))
    sidecar = coarse / "step-00000002.json"
    sidecar.write_text(json.dumps(damage(json.loads(sidecar.read_text()))) if damage else '{"kind": "coa')
    before = hashes(coarse)
    result = train("refine", "--tiny", "--manifest", video_build / "train.json", "--out", tmp_path / "refine",
                   "--coarse", coarse, "--max-steps", "1", *VIDEO_SETS)
    assert one_line_error(result) and words in said(result) and str(coarse) in said(result), result.output
    with pytest.raises(CheckpointError, match="step-00000002") as err:
        load_cascade(coarse)                                  # generation and evaluation load it the same way
    assert "None" not in str(err.value)
    assert hashes(coarse) == before and not list((tmp_path / "refine").glob("step-*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(grid_build, pose_runs, tmp_path):
    result = train("vae", "--tiny", "--manifest", grid_build / "manifest.json", "--out", tmp_path / "vae",
                   "--device", "cuda", "--max-steps", "1", *POSE_SETS)
    assert one_line_error(result) and "--device cuda: this machine has no CUDA GPU" in said(result), result.output
    evaluated = train("eval", "--run", pose_runs / "pld", "--manifest", grid_build / "manifest.json",
                      "--device", "cuda")
    assert one_line_error(evaluated) and "no CUDA GPU" in said(evaluated), evaluated.output
    assert not (tmp_path / "vae").exists()


# ------------------------------------------------------------------ data-side messages
def test_too_short_clips_name_the_setting_that_drops_them(samples, tmp_path):
    """A 0.2 s clip with a face in every frame and a 0.05 s one, with normalise.min_seconds lowered to 0.1: the
    probe drops the shorter by normalise.min_seconds, the face tracker the other by facetrack.min_clip_s."""
    from posetalk_data.cli import app

    src = tmp_path / "in"
    src.mkdir()
    for name, seconds in (("short.mp4", 0.2), ("shorter.mp4", 0.05)):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(samples / "videos" / "grid_bbaf2n.mpg"),
                        "-t", str(seconds), "-c:v", "libx264", "-c:a", "aac", str(src / name)], check=True)
    result = CliRunner().invoke(app, ["build", "--src", "folder", "--input", str(src), "--out", str(tmp_path / "o"),
                                      "--workers", "0", "--set", "facetrack.crop_size=64", "--set",
                                      "normalise.min_seconds=0.1"])
    reasons = {r["video_id"]: (r["stage"], r["reason"]) for r in pq.read_table(tmp_path / "o" / "failures.parquet")
               .to_pylist()}
    assert reasons["shorter.mp4"][0] == "probe" and "below normalise.min_seconds (0.1 s)" in reasons["shorter.mp4"][1]
    stage, reason = reasons["short.mp4"]
    assert stage == "facetrack" and "facetrack.min_clip_s (1 s) in 0.20 s of video" in reason, (result.output, reason)


# ------------------------------------------------------------------ killed while writing a checkpoint
KILLED_RUN = ["loop.ckpt_every=1", "loop.keep_checkpoints=2", "loop.log_every=1", "model.d_model=256"]


def start_training(manifest: Path, out: Path, max_steps: int) -> subprocess.Popen:
    code = "import sys; from posetalk_models.cli.train import app; sys.argv[0] = 'posetalk-train'; app()"
    sets = [x for o in (*TINY_POSE, "loop.tensorboard=false", *KILLED_RUN) for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", code, "vae", "--tiny", "--manifest", str(manifest), "--out",
                             str(out), "--max-steps", str(max_steps), *sets], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_while_writing(proc: subprocess.Popen, out: Path, suffix: str, timeout: float = 240) -> list[str]:
    """kill -9 the training the moment it writes a checkpoint file ending in `suffix` (its <file>.tmp-<pid> appears
    in the run folder) once it has one checkpoint to fall back on; returns the temporary files it left."""
    deadline, mine = time.monotonic() + timeout, f"{suffix}.tmp-{proc.pid}"
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            if any(e.name.endswith(mine) for e in os.scandir(out)) and list(out.glob("step-*.safetensors")):
                proc.kill()
                proc.wait()
                return [p.name for p in out.glob(f"*.tmp-{proc.pid}")]
    proc.kill()
    raise AssertionError(f"no checkpoint write caught: {proc.stderr.read().decode()[-2000:]}")


def complete(out: Path) -> list[int]:
    """Steps of the listed checkpoints, each loaded in full (weights, sidecar, optimiser state)."""
    from posetalk_models.checkpoints import checkpoints, load_state, read_sidecar

    steps = []
    for path in checkpoints(out):
        load_file(str(path))
        steps.append(read_sidecar(path)["step"])
        load_state(path.with_suffix(".opt.pt"), "cpu")
    return steps


def test_a_training_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(grid_build, tmp_path):
    manifest, out = grid_build / "manifest.json", tmp_path / "vae"
    args = ("vae", "--tiny", "--manifest", manifest, "--out", out, *POSE_SETS,
            *[x for o in KILLED_RUN for x in ("--set", o)])
    for kill, suffix in enumerate((".opt.pt", ".safetensors")):   # the first file of a checkpoint, then the last
        proc = start_training(manifest, out, 10_000)
        while not (out / ".lock").is_file() and proc.poll() is None:
            time.sleep(0.05)
        assert json.loads((out / ".lock").read_text())["pid"] == proc.pid
        if kill == 0:       # a second training on the same folder while the first runs: refused, nothing mixed
            busy = train(*args, "--max-steps", "5")
            assert one_line_error(busy) and f"(process {proc.pid} on" in said(busy), busy.output
        left = kill_while_writing(proc, out, suffix)
        for _ in range(3):      # the rename may beat the kill: until one is caught half written
            if left:
                break
            (out / ".lock").unlink()
            left = kill_while_writing(start_training(manifest, out, 10_000), out, suffix)
        assert left, f"no kill while {suffix} was written"
        steps = complete(out)
        assert steps
        stale = train(*args, "--max-steps", "5")
        assert one_line_error(stale) and "stale lock" in said(stale), stale.output
        (out / ".lock").unlink()                    # as the message says, once no training uses the folder
        resumed = train(*args, "--max-steps", str(steps[-1] + 1))
        assert resumed.exit_code == 0, resumed.output
        assert resumed.output.strip().endswith(f"step-{steps[-1] + 1:08d}.safetensors")
        assert not list(out.glob("*.tmp-*")) and not (out / ".lock").exists()
        listed = {p.name.split(".")[0] for p in out.glob("step-*.safetensors")}
        assert {p.name.split(".")[0] for p in out.glob("step-*")} == listed       # no half checkpoint left over
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})   # whole rows, no step twice
        assert complete(out)[-1] == steps[-1] + 1
