"""The build's model workers on one GPU (issue 13): the sample clips built with the paper profile, HuBERT and CLIP
running in model workers that each ask Ray for a share of the GPU, against the same build with CPU model workers;
per-stage worker time and frames/s, in under 5 minutes.

HuBERT-base and CLIP ViT-B-32 at their real sizes, with random weights made on the spot and loaded from local files
(no download; the figures are throughput, not features).

  python bench/gpu_build.py prep    # here: the sample clips into out/gpu-build/videos (git-ignored)
  python bench/gpu_build.py run     # on a GPU machine with the full install (`make setup`)
  python bench/gpu_build.py run --dry-run   # here, on the CPU: Ray's logical GPU, the whole path end to end

Device tool: run(command="python bench/gpu_build.py run", carry=["out/gpu-build"], timeout_s=420). The device image
seen so far has neither Ray nor mediapipe (and Ray's wheel is over the tool's 64 MiB transfer limit), so this runs
only where the project is installed. Figures to stdout and $OUT/gpu_build.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "out" / "gpu-build"
SAMPLES = REPO.parent / "shared" / "samples" / "videos"


def prep() -> None:
    if not SAMPLES.is_dir():
        sys.exit(f"sample clips not found at {SAMPLES}")
    (WORK / "videos").mkdir(parents=True, exist_ok=True)
    for clip in sorted(SAMPLES.iterdir()):
        shutil.copy2(clip, WORK / "videos" / clip.name)
    print(f"ready: {WORK / 'videos'} (git-ignored; the device call carries it)")


def random_models(folder: Path) -> tuple[Path, Path]:
    """HuBERT-base (transformers' default config) and CLIP ViT-B-32 with random weights, saved where the build's
    speech.local_dir and text.local_path read them."""
    import open_clip
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.HubertModel(transformers.HubertConfig()).save_pretrained(folder / "hubert")
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), folder / "clip.pt")
    return folder / "hubert", folder / "clip.pt"


def one_build(videos: Path, out: Path, overrides: list[str]) -> dict:
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = build(folder_specs(videos), out, load_config(None, overrides, profile="paper"), source="folder",
                   root=videos)
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "frames": result.frames, "frames_per_s": round(result.frames / wall, 1),
            "kept": result.kept, "dropped": result.dropped,
            "worker_s": {k: round(v, 2) for k, v in sorted(result.stage_seconds.items())}}


def run(dry_run: bool) -> None:
    import ray
    import torch

    gpus = torch.cuda.device_count()
    if not gpus and not dry_run:
        sys.exit("no CUDA device: run this on the GPU machine, or here with --dry-run")
    # a logical GPU in a dry run; "local": a Ray of its own, never one already running on the machine
    ray.init(address="local", num_gpus=gpus or 1, include_dashboard=False, log_to_driver=False)
    out_dir = Path(os.environ.get("OUT", WORK / "out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    hubert, clip = random_models(WORK / "models")
    models = [f"speech.local_dir={hubert}", f"text.local_path={clip}", "text.pretrained=null",
              "facetrack.crop_size=256"]
    report = {"device": torch.cuda.get_device_name(0) if gpus else "cpu (dry run, logical GPU)",
              "cpus": os.cpu_count(), "models_made_s": round(time.perf_counter() - started, 1)}
    # the same build twice: model workers sharing the GPU, then model workers on the CPU
    report["gpu_model_workers"] = one_build(WORK / "videos", WORK / "build-gpu",
                                            [*models, "models.workers=2", "models.gpus=0.5", "models.batch_clips=4"])
    report["cpu_model_workers"] = one_build(WORK / "videos", WORK / "build-cpu",
                                            [*models, "models.workers=1", "models.gpus=0", "speech.device=cpu"])
    gpu, cpu = report["gpu_model_workers"], report["cpu_model_workers"]
    for name, row in (("GPU model workers", gpu), ("CPU model workers", cpu)):
        stages = ", ".join(f"{k} {v:.1f}" for k, v in row["worker_s"].items())
        print(f"{name}: {row['frames']} frames in {row['wall_s']:.1f} s = {row['frames_per_s']:.1f} frames/s; "
              f"worker seconds per stage: {stages}")
    speech_gpu, speech_cpu = gpu["worker_s"].get("speech", 0.0), cpu["worker_s"].get("speech", 0.0)
    print(f"speech stage, CPU / GPU worker time: {speech_cpu / max(speech_gpu, 1e-6):.1f}x; whole build, GPU / CPU "
          f"frames/s: {gpu['frames_per_s'] / max(cpu['frames_per_s'], 1e-6):.2f}")
    (out_dir / "gpu_build.json").write_text(json.dumps(report, indent=1))
    print(f"total {time.perf_counter() - started:.0f} s; {out_dir / 'gpu_build.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("prep", "run"))
    parser.add_argument("--dry-run", action="store_true", help="run: on the CPU, with Ray's logical GPU")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    prep() if args.what == "prep" else run(args.dry_run)


if __name__ == "__main__":
    main()
