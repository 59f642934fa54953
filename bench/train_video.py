"""Is the frame loader fast enough to keep the video generator's training busy? Loader frames/s against training
frames/s at PoseTalk's size (the shipped posetalk_models/train/configs/video-*.yaml: 256 px, batch 16), measured in one run.

input    : a real build of four sample clips at 256 px crops (two GRID, two LivePortrait clips), made once in --work
           and reused (the build resumes)
loader   : target frames/s of the training DataLoader (decode each clip's video.mp4 from the shard bytes at 256 px,
           cut (source, target) pairs, masks from the landmarks) with the configured num_workers and with 0 workers,
           after its first batch
train    : frames/s of the trainer itself, batch_size x steps/s, from the s_per_step the shared loop logs each step
           (forward, backward, clipping, optimiser; the enhancer's discriminator step too) on batches held in memory;
           the first --warmup steps and the last one are left out. The frozen stages under RefineNet and the
           enhancer are random-init networks of the paper size (the same compute as trained ones), and the VGG19 of
           the perceptual term is random-init too (the same compute as ImageNet weights, which this machine lacks)
memory   : the peak resident memory of this process (CPU) or the peak CUDA memory allocated per stage (GPU)
ratio    : loader frames/s / train frames/s, printed last per stage (target >= 10: the loader is not the bottleneck).
           On 2 CPU cores the configured workers share the cores the training would use; each figure is measured
           alone. Trains on CUDA when present (the config's device "auto").
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "samples" / "videos"
CLIPS = ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg", "liveportrait_d11.mp4", "liveportrait_d20.mp4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_input(work: Path, size: int) -> Path:
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        if not (clips / name).exists():
            os.symlink(VIDEOS / name, clips / name)
    out = work / f"build{size}"
    build(folder_specs(clips), out, load_config(None, [f"facetrack.crop_size={size}"]), source="folder", root=clips,
          workers=0)
    return out / "manifest.json"


def config(stage: str, overrides: list[str]):
    from posetalk_models.train.config import load_train_config, shipped

    return load_train_config(stage, shipped(stage), ["loss.vgg_weights=random", *overrides])


def loader_frames_per_s(manifest: Path, data, batch_size: int, workers: int, batches: int) -> float:
    import time

    from posetalk_models.data.frames import frame_loader

    it = iter(frame_loader(manifest, data, batch_size=batch_size, num_workers=workers))
    next(it)
    started = time.perf_counter()
    frames = sum(next(it)["target"].shape[:2].numel() for _ in range(batches))
    return frames / (time.perf_counter() - started)


def objective(stage: str, cfg, overrides: list[str], speech_dim: int, device):
    """The stage's objective as its trainer builds it (its family's make_objective), over random-init frozen stages
    of the same configs (each the net its own trainer would start from)."""
    import importlib

    from posetalk_models.nets.cascade import STAGES, Cascade
    from posetalk_models.train.video_objective import stage_net

    before = {kind: stage_net(kind, config(kind, overrides).model_copy(update={"data": cfg.data}), speech_dim)
              for kind in STAGES[:STAGES.index(stage)]}
    family = importlib.import_module(f"posetalk_models.train.{stage}")     # one training file per stage
    return family.make_objective(cfg, speech_dim, Cascade(**before) if before else None).to(device)


def train_frames_per_s(stage: str, obj, batches: list[dict], loop, warmup: int, steps: int) -> float:
    from posetalk_models.train.loop import train

    loop = loop.model_copy(update={"max_steps": warmup + steps + 1, "log_every": 1, "progress": False,
                                   "tensorboard": False, "ckpt_every": 10**9})
    with tempfile.TemporaryDirectory() as run:
        train(stage, run, obj, lambda step: itertools.cycle(batches), loop, {})
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    frames = batches[0]["target"].shape[:2].numel()
    return frames * steps / sum(r["s_per_step"] for r in rows[warmup:-1])


def peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "out" / "bench-train-video",
                        help="where the sample build is kept between runs")
    parser.add_argument("--stages", default="coarse,refine,enhance", help="comma-separated: coarse, refine, enhance")
    parser.add_argument("--steps", type=int, help="timed training steps per stage (default 2 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="training steps left out of the timing (default 1 / 5)")
    parser.add_argument("--loader-batches", type=int, default=4, help="timed loader batches per setting")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override every stage's config, e.g. --set loop.batch_size=8")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        sys.exit(f"sample clips not found at {VIDEOS}")
    import torch

    from posetalk_models.data.frames import frame_loader, resolve_speech, speech_dim
    from posetalk_models.train.loop import pick_device

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    first = config(stages[0], args.set)
    manifest = build_input(args.work, first.data.size)
    device = pick_device(first.loop.device)
    on_gpu = device.type == "cuda"
    steps = args.steps if args.steps is not None else 20 if on_gpu else 2
    warmup = args.warmup if args.warmup is not None else 5 if on_gpu else 1
    rows = []
    for stage in stages:
        torch.manual_seed(0)
        cfg = config(stage, args.set)
        data = resolve_speech(manifest, cfg.data)
        loop = cfg.loop
        batches = list(itertools.islice(frame_loader(manifest, data, batch_size=loop.batch_size), 2))
        loaders = {w: loader_frames_per_s(manifest, data, loop.batch_size, w, args.loader_batches)
                   for w in sorted({0, loop.num_workers})}
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        obj = objective(stage, cfg.model_copy(update={"data": data}), args.set, speech_dim(manifest, data), device)
        trained = train_frames_per_s(stage, obj, batches, loop, warmup, steps)
        params = sum(p.numel() for p in obj.model.parameters()) / 1e6
        rows.append((stage, loop, loaders, trained, params, peak_memory_mb(device)))
        print(f"{stage}: loader {', '.join(f'{v:.1f} frames/s ({w} workers)' for w, v in loaders.items())}; "
              f"train {trained:.2f} frames/s", file=sys.stderr, flush=True)
        del obj
    shards = json.loads(manifest.read_text())["shards"]
    print(f"input: {sum(s['samples'] for s in shards)} clips, {first.data.size} px; train on {device} "
          f"({torch.get_num_threads()} threads, {os.cpu_count()} cores), {steps} steps timed after {warmup}")
    print(f"{'stage':<8}{'params M':>9}{'batch':>6}{'loader f/s, 0 w':>17}{'loader f/s, configured':>24}"
          f"{'train f/s':>11}{'peak MB':>9}")
    for stage, loop, loaders, trained, params, memory in rows:
        print(f"{stage:<8}{params:>9.1f}{loop.batch_size:>6}{loaders[0]:>17.1f}"
              f"{loaders[loop.num_workers]:>20.1f} ({loop.num_workers}){trained:>11.2f}{memory:>9.0f}")
    for stage, loop, loaders, trained, _, _ in rows:
        print(f"ratio {stage} loader ({loop.num_workers} workers) / train: {loaders[loop.num_workers] / trained:.1f}")


if __name__ == "__main__":
    main()
