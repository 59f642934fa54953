"""The video generator at PoseTalk's size (256 px) on one GPU, in under 8 minutes: steps/s, memory, held-out figures
and a strip of held-out frames (real | copy-source | CoarseNet | RefineNet).

  python bench/gpu_video.py prep        # here (CPU, with the full install): the 256 px sample build, split into
                                        # train (first 70 % of each clip) and held (the rest), in out/gpu-video;
                                        # and the wheels the GPU image lacks, in .whl (see bench/gpu_video.sh)
  bash bench/gpu_video.sh               # there: installs the wheels, then `python bench/gpu_video.py run`

The device tool call: run(command="bash bench/gpu_video.sh", carry=["out/gpu-video", ".whl"], timeout_s=560).
Each stage first trains 20 steps to measure its speed, then resumes to as many steps as fit its time budget
(--seconds); the perceptual term is off (no VGG19 weights on that machine either). Figures go to stdout and
$OUT/gpu_video.json, the strip to $OUT/strip.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "out" / "gpu-video"
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
CLIPS = ("liveportrait_d10.mp4", "liveportrait_d11.mp4", "liveportrait_d20.mp4",
         "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", "videoretalking_face_2.mp4")
WHEELS = ("webdataset==1.0.2", "braceexpand==0.1.7", "decord2==3.4.0", "pydantic==2.14.3", "pydantic_core==2.50.4",
          "annotated-types==0.8.0", "typing-inspection==0.4.5", "ffmpeg-python==0.2.0", "future==1.0.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def prep() -> None:
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.manifest import filter_manifest
    from posetalk_data.media import probe
    from posetalk_data.schema import VideoSpec

    specs = []
    for name in CLIPS:
        cut = round(probe(SAMPLES / name).duration * 0.7, 2)
        specs += [VideoSpec("folder", name, str(SAMPLES / name), start=0.0, end=cut),
                  VideoSpec("folder", name, str(SAMPLES / name), start=cut)]
    build(specs, WORK / "build", load_config(None, ["facetrack.crop_size=256"]), source="folder", root=SAMPLES)
    for name, where in (("train", "start == 0"), ("held", "start > 0")):
        filter_manifest(WORK / "build" / "manifest.json", where, WORK / "build" / f"{name}.json")
    wheels = REPO / ".whl"
    for wheel in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels), wheel], check=True)
    print(f"ready: {WORK / 'build'} and {wheels} (both git-ignored; the device call carries them)")


def stage_run(stage: str, manifest: Path, held: Path, out: Path, seconds: float, extra: list[str], **kw) -> dict:
    """Train a stage for about `seconds` (speed measured over its first 20 steps); its figures."""
    from posetalk_models.train.coarse import train_coarse
    from posetalk_models.train.config import load_train_config, shipped
    from posetalk_models.train.refine import train_refine

    def config(steps: int):
        return load_train_config(stage, shipped(stage), [
            "loss.perceptual=0", f"loop.max_steps={steps}", f"loop.ckpt_every={steps}", "loop.log_every=10",
            "loop.progress=false", "loop.num_workers=8", *extra])

    train = {"coarse": train_coarse, "refine": train_refine}[stage]
    started = time.perf_counter()
    train(manifest, out, config(20), **kw)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = rows[-1]["s_per_step"]
    steps = max(40, min(20000, int(seconds / max(per_step, 1e-3))))
    train(manifest, out, config(steps), holdout=held, **kw)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    timed = [r["s_per_step"] for r in rows if r["step"] > 20 and "holdout_copy_l1" not in r]
    rate = round(len(timed) / sum(timed), 2) if timed else None
    return {"steps": steps, "batch": config(steps).loop.batch_size, "steps_per_s": rate,
            "wall_s": round(time.perf_counter() - started, 1), "cuda_peak_gb": last.get("cuda_peak_gb"),
            "loss_first": rows[0]["loss"], "loss_last": last["loss"],
            **{k: v for k, v in last.items() if k.startswith("holdout_") or k.startswith("lip_share")}}


def strip_png(run: Path, held: Path, path: Path) -> None:
    """real | copy-source | CoarseNet | RefineNet on the first held-out clip, self-reenacted."""
    import numpy as np

    from posetalk_models.evaluate.clips import clips
    from posetalk_models.evaluate.report import strip
    from posetalk_models.runs import load_cascade
    from posetalk_models.generate.render import render, source_tensor

    import torch

    cascade, sidecar = load_cascade(run, device="cuda" if torch.cuda.is_available() else "cpu")
    data = sidecar["config"]["data"]
    clip = next(clips(held, cascade.size, data["speech"], 1, 100))
    rows = {"real": clip.real, "copy": np.repeat(clip.real[:1], len(clip.real), 0)}
    for stage in ("coarse", "refine"):
        rows[stage] = render(cascade, source_tensor(clip.real[0], cascade.size), clip.motion[0, :7], clip.motion,
                             clip.speech, windows=(data["motion_window"], data["audio_window"]), stage=stage)
    strip(rows, path)


def run(seconds: float, extra: list[str]) -> None:
    import torch

    out = Path(os.environ.get("OUT", REPO / "out" / "gpu-video-results"))
    out.mkdir(parents=True, exist_ok=True)
    manifest, held = WORK / "build" / "train.json", WORK / "build" / "held.json"
    runs = Path("/tmp/posetalk-gpu-runs")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (a dry run)"
    print(f"device: {gpu}; torch {torch.__version__}", flush=True)
    shutil.rmtree(runs, ignore_errors=True)
    figures = {"coarse": stage_run("coarse", manifest, held, runs / "coarse", seconds,
                                   ["warp_only_steps=200", *extra])}
    print(json.dumps({"coarse": figures["coarse"]}, indent=1), flush=True)
    figures["refine"] = stage_run("refine", manifest, held, runs / "refine", seconds, extra, coarse_run=runs / "coarse")
    print(json.dumps({"refine": figures["refine"]}, indent=1), flush=True)
    strip_png(runs / "refine", held, out / "strip.png")
    (out / "gpu_video.json").write_text(json.dumps(figures, indent=1))
    print(f"wrote {out / 'gpu_video.json'} and {out / 'strip.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("prep", "run"))
    parser.add_argument("--seconds", type=float, default=150, help="training time budget per stage (run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override both stages' configs (a CPU dry run: --set loop.batch_size=2 ...)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prep() if args.what == "prep" else run(args.seconds, args.set)


if __name__ == "__main__":
    main()
