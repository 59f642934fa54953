"""DDP: the even epoch split over ranks and workers (pure functions, then real shards), and a real 2-process CPU
run of the VAE and PLD trainers under torchrun (gloo).

Run as a script (`torchrun ... tests/test_pose_ddp.py MANIFEST OUT`) this file is that run's worker: each rank
records the windows of one epoch and its final weights' hashes in OUT/rank<r>.json, and in OUT/rank<r>.exit whether
the process group was still up when the process exited."""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posetalk_models.data.windows import DataConfig, loader
from posetalk_models.data.stream import epoch_split, split_quota, split_shards

TINY_VAE = ["loop.max_steps=4", "loop.progress=false", "loop.num_workers=0", "loop.batch_size=4",
            "loop.ckpt_every=2", "loop.log_every=1", "loop.tensorboard=false", "loop.device=cpu",
            "model.d_model=32", "model.enc_layers=1", "model.dec_layers=1", "data.window=8"]


def shards(*counts: int) -> list[dict]:
    return [{"path": f"s{i}.tar", "samples": n, "sha256": ""} for i, n in enumerate(counts)]


def samples_of(pieces: list[dict]) -> list[tuple[str, int]]:
    """(shard, index among its selected samples) for every sample the pieces read."""
    return [(p["path"], i) for p in pieces for i in range(p["start"], p["total"], p["step"])]


def count(pieces: list[dict]) -> int:
    return sum(p["count"] for p in pieces)


@pytest.mark.parametrize("counts, parts", [((50, 40, 30, 20, 10, 10, 5, 5), 3), ((100, 10, 10), 2), ((7,), 4),
                                           ((3, 0, 2), 2), ((1, 1, 1, 1, 1), 2)])
def test_split_covers_every_sample_once_and_balances(counts, parts):
    deal = split_shards(shards(*counts), parts, seed=0)
    read = [s for part in deal for s in samples_of(part)]
    assert len(read) == len(set(read)) == sum(counts)             # a partition of the samples
    loads, largest = [count(part) for part in deal], max(p["count"] for part in deal for p in part)
    assert largest <= -(-sum(counts) // parts)                    # big shards cut to about one share
    assert all(loads) and max(loads) - min(loads) <= largest      # greedy's bound


def test_split_is_deterministic_by_seed_and_honours_keys():
    many = shards(*[4] * 12)
    assert split_shards(many, 3, seed=5) == split_shards(many, 3, seed=5)
    assert split_shards(many, 3, seed=5) != split_shards(many, 3, seed=6)   # ties broken by the seed
    subset = [{"path": "a.tar", "samples": 100, "keys": ["k1", "k2"]}, {"path": "b.tar", "samples": 2}]
    assert [count(part) for part in split_shards(subset, 2, seed=0)] == [2, 2]   # "keys" counts, not "samples"


@pytest.mark.parametrize("counts, world, workers, windows", [
    ((1,), 2, 2, 0), ((9, 1), 2, 4, 20), ((30, 20, 5, 5, 5), 3, 2, 80), ((2,), 8, 3, 0), ((5,), 4, 1, 4)])
def test_every_rank_yields_the_same_windows(counts, world, workers, windows):
    per_rank = []
    for rank in range(world):
        splits = [epoch_split(shards(*counts), seed=1, windows_per_clip=4, rank=rank, world=world, worker=w,
                              workers=workers) for w in range(workers)]
        assert all(windows <= 4 * count(pieces) for pieces, windows in splits)   # a quota a worker can fill
        per_rank.append(sum(windows for _, windows in splits))
    assert per_rank == [windows] * world   # fewer samples than ranks: 0 everywhere, not a hang


def test_split_quota():
    assert split_quota([40, 0, 20], 31) == [21, 0, 10] and split_quota([3, 3], 6) == [3, 3]
    assert split_quota([], 0) == [] and split_quota([0, 0], 0) == [0, 0]


def test_one_shard_two_ranks_two_workers_epoch(grid_build, monkeypatch):
    """The real 1-shard, 2-clip build: each rank reads one clip, one of its two workers nothing, and neither
    hangs."""
    keys = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")   # what torchrun sets; webdataset reads it before the process group
        data = DataConfig(window=8, speech=None, text=None, resample=False, windows_per_clip=3)
        keys.append([k for b in loader(grid_build / "manifest.json", data, batch_size=2, num_workers=2)
                     for k in b["key"]])
    assert len(keys[0]) == len(keys[1]) == 3 and len(set(keys[0])) == len(set(keys[1])) == 1
    assert set(keys[0]) != set(keys[1])


# ------------------------------------------------------------------ a real 2-process run
TINY_PLD = ["loop.max_steps=3", "loop.progress=false", "loop.num_workers=0", "loop.batch_size=4", "loop.log_every=1",
            "loop.tensorboard=false", "loop.device=cpu", "model.d_model=32", "model.heads=2", "model.layers=3",
            "data.window=8", "data.text=null", "latent_stat_batches=2"]   # speech only: the text projection idles


def weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode() + value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_main(manifest: Path, out: Path) -> None:
    """One torchrun worker: an epoch of windows through a 2-worker loader, 4 VAE steps, then 3 PLD steps (over the
    VAE the test put in out/pld) under DDP; records what it read and the weights it ended with."""
    from posetalk_models.train import pose_pld as pld_training
    from posetalk_models.train import pose_vae as vae_training
    from posetalk_models.train import loop as trainer
    from posetalk_models.train.config import load_train_config

    rank = os.environ["RANK"]
    # registered before the trainer's own exit handler, so it runs after it: is the process group gone?
    atexit.register(lambda: (out / f"rank{rank}.exit").write_text(str(torch.distributed.is_initialized())))
    epoch = DataConfig(window=8, speech=None, text=None, resample=False, windows_per_clip=3)
    keys = [k for b in loader(manifest, epoch, batch_size=2, num_workers=2) for k in b["key"]]
    trained = {}

    def train_keeping_the_model(name, run_dir, objective, *args, **kwargs):
        trained[Path(run_dir).name] = objective.model
        return trainer.train(name, run_dir, objective, *args, **kwargs)

    vae_training.train = pld_training.train = train_keeping_the_model   # the trainers' own references
    vae_training.train_vae(manifest, out / "vae", load_train_config("vae", None, TINY_VAE))
    group = torch.distributed.group.WORLD
    pld_training.train_pld(manifest, out / "pld", load_train_config("pld", None, TINY_PLD))
    record = {"keys": keys, "weights": {run: weights_hash(model) for run, model in trained.items()},
              "one_group": group is not None and torch.distributed.group.WORLD is group}
    (out / f"rank{rank}.json").write_text(json.dumps(record))


def frozen_vae(manifest: Path, run_dir: Path) -> None:
    """An untrained tiny VAE as the PLD run's own copy, so no rank has to copy one in."""
    from posetalk_models.train.config import load_train_config
    from posetalk_models.data.windows import pose_stats
    from posetalk_models.checkpoints import save_weights
    from posetalk_models.nets.vae import PoseVAE

    cfg = load_train_config("vae", None, TINY_VAE)
    run_dir.mkdir(parents=True)
    save_weights(run_dir / "vae.safetensors", PoseVAE(cfg.model),
                 {"kind": "vae", "config": cfg.model_dump(), "stats": pose_stats(manifest, window=8)})


def torchrun(script_args: list[str], log: Path, timeout: float, script: str = __file__) -> tuple[int, str]:
    """(exit status, output) of 2 local processes (gloo on CPU) running `script` (this file); stopped after
    `timeout` s."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
           *script_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as sink:   # a file, not a pipe: a stray worker cannot keep the test waiting on it
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()        # torchrun passes it on to its workers and waits for them
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail(f"the DDP run did not finish in {timeout} s (a rank hung):\n{log.read_text()[-3000:]}")
    return proc.returncode, log.read_text()


def test_two_process_training(grid_build, tmp_path):
    from safetensors.torch import load_file

    from posetalk_models.nets.vae import PoseVAE, PoseVAEConfig

    manifest = grid_build / "manifest.json"
    frozen_vae(manifest, tmp_path / "pld")
    status, output = torchrun([str(manifest), str(tmp_path)], tmp_path / "torchrun.log", timeout=120)
    assert status == 0, output[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    run = tmp_path / "vae"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [f"step-0000000{s}.{ext}" for s in (2, 4) for ext in ("safetensors", "json", "opt.pt")] + ["metrics.jsonl"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]                                   # rank 0 alone logged
    sidecar = json.loads((run / "step-00000004.json").read_text())
    saved = PoseVAE(PoseVAEConfig(**sidecar["config"]["model"]))
    saved.load_state_dict(load_file(str(run / "step-00000004.safetensors")))
    assert ranks[0]["weights"]["vae"] == ranks[1]["weights"]["vae"] == weights_hash(saved)   # in step, and saved
    assert ranks[0]["weights"]["pld"] == ranks[1]["weights"]["pld"]
    assert [json.loads(line)["step"] for line in (tmp_path / "pld" / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3]
    assert all(r["one_group"] for r in ranks)                      # the PLD run reused the VAE run's group ...
    assert [(tmp_path / f"rank{r}.exit").read_text() for r in (0, 1)] == ["False", "False"]  # ... ended at exit
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 3     # one clip each, 3 windows, workers included
    assert not set(ranks[0]["keys"]) & set(ranks[1]["keys"])


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]), Path(sys.argv[2]))
