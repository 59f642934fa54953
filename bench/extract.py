"""Extraction throughput against the machine's limit, measured in one run on the real sample clips.

pipeline  : frames/s of the full visual pipeline (Ray, one worker per core) over ../shared/samples/videos
limit     : frames/s of decoding alone + the landmark model alone on the same frames, each on all cores
            (the two unavoidable costs of the work; limit = 1 / (1/decode_fps + 1/mesh_fps))
memory    : peak RSS of one worker (its ffmpeg children included) processing the longest clip
The ratio pipeline / limit is printed last (target >= 0.8).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
CROP = 256


def cfg():
    from posetalk_data.config import PIPELINES, load_config

    return load_config(PIPELINES / "folder.yaml", [f"facetrack.crop_size={CROP}"])


def decode_count(path: str) -> tuple[int, float]:
    """Full-resolution decode at 25 fps, as the pipeline's passes do."""
    from posetalk_data.media import read_frames

    started = time.perf_counter()
    return sum(1 for _ in read_frames(path, fps=25)), time.perf_counter() - started


def mesh_count(path: str) -> tuple[int, float]:
    """FaceMesh alone on the clip's face crops (decoded beforehand, so only the model is timed)."""
    import mediapipe

    from posetalk_data.media import read_frames

    frames = list(read_frames(path, fps=25, size=(CROP, CROP)))
    mesh = mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    started = time.perf_counter()
    for f in frames:
        mesh.process(f)
    return len(frames), time.perf_counter() - started


def parallel_fps(fn, paths: list[str], procs: int) -> float:
    """frames/s of `fn` over all clips with `procs` processes busy at once (each times its own work)."""
    with mp.get_context("spawn").Pool(procs) as pool:
        results = pool.map(fn, paths, chunksize=1)
    return sum(n for n, _ in results) / (sum(t for _, t in results) / procs)


def pipeline_fps(paths: list[str], workers: int) -> tuple[float, int]:
    import ray

    from posetalk_data.runner import run_videos
    from posetalk_data.sources.folder import folder_specs

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    specs = [s for s in folder_specs(SAMPLES) if s.path in paths]
    list(run_videos(specs[:workers], cfg(), workers=workers))        # warm-up: actors load their models
    started = time.perf_counter()
    frames = 0
    for _, records in run_videos(specs, cfg(), workers=workers):
        frames += sum(round((r.end - r.start) * 25) for r in records if r.ok)
    wall = time.perf_counter() - started
    ray.shutdown()
    return frames / wall, frames


def worker_peak_mb(path: str) -> None:
    from posetalk_data.pipeline import VideoProcessor
    from posetalk_data.sources.folder import folder_specs

    spec = next(s for s in folder_specs(SAMPLES) if s.path == path)
    VideoProcessor(cfg())(spec)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{(own + kids) / 1024:.0f}")


def main() -> None:
    if not SAMPLES.is_dir():
        sys.exit(f"sample clips not found at {SAMPLES}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cores = os.cpu_count() or 1
    paths = sorted(str(p) for p in SAMPLES.iterdir())
    decode = parallel_fps(decode_count, paths, cores)
    mesh = parallel_fps(mesh_count, paths, cores)
    limit = 1 / (1 / decode + 1 / mesh)
    fps, frames = pipeline_fps(paths, cores)
    longest = max(paths, key=lambda p: Path(p).stat().st_size)
    import subprocess

    peak = subprocess.run([sys.executable, __file__, "--peak", longest], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    print(f"clips: {len(paths)}  frames kept: {frames}  cores: {cores}  crop: {CROP}px")
    print(f"decode alone        : {decode:8.1f} frames/s (all cores)")
    print(f"landmark model alone: {mesh:8.1f} frames/s (all cores)")
    print(f"limit (decode+model): {limit:8.1f} frames/s")
    print(f"full pipeline       : {fps:8.1f} frames/s")
    print(f"peak memory / worker: {peak} MB ({Path(longest).name})")
    print(f"ratio pipeline/limit: {fps / limit:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        worker_peak_mb(sys.argv[2])
    else:
        main()
