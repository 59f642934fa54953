"""Is the shard loader fast enough to keep pose training busy? Loader throughput against training throughput at the
default model size (posetalk_models/train/configs/pose-vae.yaml, pose-pld.yaml: window 64, batch 64), measured in one run.

input    : a small real build of the sample clips (the two GRID clips and two LivePortrait clips, 96 px crops), made
           once in --work and reused (the build resumes; clips must be >= 64 frames for full windows)
loader   : windows/s of the training DataLoader (each model's data config: the VAE reads motion only, the PLD
           motion + speech + text) with the configured num_workers and with 0 workers, after its first batch
train    : windows/s of the trainer itself, steps/s x batch_size, from the s_per_step the shared loop
           (posetalk_models.train.loop.train) logs each step: forward, backward, clipping and the optimiser step on
           batches held in memory, so the loader is not timed twice; the first --warmup steps and the last one (it
           saves the checkpoint) are left out. The PLD's frozen VAE is a random-init one of the default size.
ratio    : loader windows/s / train windows/s, printed last per model (target >= 10: the loader is not the
           bottleneck). On 2 CPU cores the configured 4 workers share the cores the training would use; the
           figures are each measured alone. Trains on CUDA when present (the config's device "auto").
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "samples" / "videos"
CLIPS = ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg", "liveportrait_d11.mp4", "liveportrait_d20.mp4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_input(work: Path) -> Path:
    """The sample clips' shards in work/build (built on the first run, resumed after); returns the manifest."""
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        if not (clips / name).exists():
            os.symlink(VIDEOS / name, clips / name)
    build(folder_specs(clips), work / "build", load_config(None, ["facetrack.crop_size=96"]), source="folder",
          root=clips, workers=0)
    return work / "build" / "manifest.json"


def configs(overrides: list[str]):
    """(VAE config, PLD config) at the default model size, with the PLD's speech/text resolved later."""
    from posetalk_models.train.config import load_train_config, shipped

    return (load_train_config("vae", shipped("vae"), overrides),
            load_train_config("pld", shipped("pld"), overrides))


def loader_windows_per_s(manifest: Path, data, batch_size: int, workers: int, batches: int) -> float:
    """Windows/s over `batches` batches after the first (worker start-up and the first shard read left out)."""
    from posetalk_models.data.windows import loader

    it = iter(loader(manifest, data, batch_size=batch_size, num_workers=workers))
    next(it)
    started = time.perf_counter()
    windows = sum(len(next(it)["pose"]) for _ in range(batches))
    return windows / (time.perf_counter() - started)


def held_batches(manifest: Path, data, batch_size: int, n: int = 4) -> list[dict]:
    from posetalk_models.data.windows import loader

    return list(itertools.islice(loader(manifest, data, batch_size=batch_size), n))


def train_windows_per_s(name: str, objective, batches: list[dict], loop, warmup: int, steps: int) -> float:
    """batch_size x steps/s of trainer.train over the held batches, from its per-step s_per_step log."""
    from posetalk_models.train.loop import train

    loop = loop.model_copy(update={"max_steps": warmup + steps + 1, "log_every": 1, "progress": False,
                                   "tensorboard": False, "ckpt_every": 10**9})
    with tempfile.TemporaryDirectory() as run:
        train(name, run, objective, lambda step: itertools.cycle(batches), loop, {})
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(r["s_per_step"] for r in rows[warmup:-1])
    return loop.batch_size * steps / seconds


def vae_objective(cfg, manifest: Path):
    """The VAE objective as train_vae builds it (pose_vae.make_objective), with the manifest's pose statistics."""
    from posetalk_models.data.windows import pose_stats
    from posetalk_models.train.loop import pick_device
    from posetalk_models.train.pose_vae import make_objective

    stats = pose_stats(manifest, window=cfg.data.window, translation=cfg.data.translation)
    return make_objective(cfg, stats).to(pick_device(cfg.loop.device)), stats


def pld_objective(cfg, vae_cfg, stats: dict, first: dict):
    """The PLD objective as train_pld builds it (pose_pld.make_objective), over a random-init VAE of the default
    size."""
    from posetalk_models.nets.vae import PoseVAE
    from posetalk_models.train.loop import pick_device
    from posetalk_models.train.pose_pld import make_objective, measured_sizes

    vae = PoseVAE(vae_cfg.model).eval()
    return make_objective(cfg, vae, stats, measured_sizes(cfg, vae, first)).to(pick_device(cfg.loop.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "out" / "bench-train-pose",
                        help="where the sample build is kept between runs")
    parser.add_argument("--steps", type=int, help="timed training steps per model (default 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, help="training steps left out of the timing (default 1 / 5)")
    parser.add_argument("--loader-batches", type=int, default=20, help="timed loader batches per setting")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override both training configs, e.g. --set loop.batch_size=32")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        sys.exit(f"sample clips not found at {VIDEOS}")
    import torch

    from posetalk_models.data.windows import resolve_features

    manifest = build_input(args.work)
    vae_cfg, pld_cfg = configs(args.set)
    pld_cfg = pld_cfg.model_copy(update={"data": resolve_features(manifest, pld_cfg.data)})
    torch.manual_seed(0)
    vae, stats = vae_objective(vae_cfg, manifest)
    device = next(vae.parameters()).device
    on_gpu = device.type == "cuda"   # a CPU step of the default size takes seconds, a GPU one milliseconds
    steps = args.steps if args.steps is not None else 30 if on_gpu else 3
    warmup = args.warmup if args.warmup is not None else 5 if on_gpu else 1
    rows = []
    for name, cfg in (("vae", vae_cfg), ("pld", pld_cfg)):
        loop, data = cfg.loop, cfg.data
        batches = held_batches(manifest, data, loop.batch_size)
        objective = vae if name == "vae" else pld_objective(cfg, vae_cfg, stats, batches[0])
        loaders = {w: loader_windows_per_s(manifest, data, loop.batch_size, w, args.loader_batches)
                   for w in sorted({0, loop.num_workers})}
        trained = train_windows_per_s(name, objective, batches, loop, warmup, steps)
        rows.append((name, loop, loaders, trained))
        print(f"{name}: loader {', '.join(f'{v:.0f} windows/s ({w} workers)' for w, v in loaders.items())}; "
              f"train {trained:.1f} windows/s", file=sys.stderr, flush=True)
    shards = json.loads(manifest.read_text())["shards"]
    print(f"input: {sum(s['samples'] for s in shards)} clips in {len(shards)} shard(s); window {vae_cfg.data.window}; "
          f"train on {device} ({torch.get_num_threads()} threads, {os.cpu_count()} cores), {steps} steps timed")
    print(f"{'model':<6}{'batch':>6}{'loader w/s, 0 workers':>23}{'loader w/s, configured':>24}{'train w/s':>11}"
          f"{'steps/s':>9}")
    for name, loop, loaders, trained in rows:
        print(f"{name:<6}{loop.batch_size:>6}{loaders[0]:>23.0f}{loaders[loop.num_workers]:>20.0f} ({loop.num_workers})"
              f"{trained:>11.1f}{trained / loop.batch_size:>9.3f}")
    for name, loop, loaders, trained in rows:
        print(f"ratio {name} loader ({loop.num_workers} workers) / train: {loaders[loop.num_workers] / trained:.1f}")

if __name__ == "__main__":
    main()
