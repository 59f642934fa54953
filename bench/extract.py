"""Build throughput against a sequential script and the machine's limit, as whole processes, in one run.

On the clips of ../shared/samples/videos (or --input), each command timed as a whole process (start-up included),
median of --repeat runs:

limit      : decode at 25 fps + MediaPipe FaceMesh alone, one process per clip, as many at once as there are
             cores: the work that cannot be avoided
floor      : the limit plus what a build must add to it: a square crop cut from each frame and encoded as the
             clip's H.264 video (512 px, the build's x264 settings, through the build's own writer)
script     : the sequential one-file script a researcher writes: ffmpeg -> PNG files -> FaceMesh per frame,
             clip after clip, in one process
build      : `posetalk-data build --src folder --profile offline` (Ray, one worker per core)

Then the steady state: the same clips linked again and again to at least --steady-min minutes of video (median of
--repeat runs too), limit, floor and build in frames/s as whole processes, and the build's marginal rate (extra
frames over extra seconds between the sample run and the steady run: the build's one-off start-up and report taken
out; the limit starts a process per clip, so its rate has no one-off part). And the peak memory of one worker on the
longest clip and on a clip twice as long, with the default frame cache (bounded by facetrack.frame_cache_mb) and
without it. Ratios last: build / script time (target <= 0.5) and build / limit throughput in the steady state
(target >= 0.75).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
PYTHON = sys.executable

LIMIT = """
import sys, mediapipe as mp
from posetalk_data.media import read_frames
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
n = 0
for frame in read_frames(sys.argv[1], fps=25):
    mesh.process(frame)
    n += 1
print(n)
"""

FLOOR = """
import sys, cv2, mediapipe as mp
from posetalk_data.media import VideoWriter, read_frames
from posetalk_data.tracking import cut_square
cv2.setNumThreads(1)   # as the build's workers: one process per core
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
n = 0
with VideoWriter(sys.argv[2], width=512, height=512, fps=25, crf=18, preset="superfast", keyframe_every=25) as out:
    for frame in read_frames(sys.argv[1], fps=25):
        mesh.process(frame)
        h, w = frame.shape[:2]
        out.write(cut_square(frame, w / 2, h / 2, 0.8 * min(h, w), 512)[0])
        n += 1
print(n)
"""

SCRIPT = """
import glob, os, subprocess, sys, tempfile
import cv2, mediapipe as mp, numpy as np
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
total = 0
for video in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", video, "-vf", "fps=25",
                        os.path.join(tmp, "%06d.png")], check=True)
        points = []
        for name in sorted(glob.glob(os.path.join(tmp, "*.png"))):
            found = mesh.process(cv2.cvtColor(cv2.imread(name), cv2.COLOR_BGR2RGB)).multi_face_landmarks
            points.append([(p.x, p.y, p.z) for p in found[0].landmark] if found else None)
        total += len(points)
        np.save(os.path.join(tmp, "landmarks.npy"), np.array([p for p in points if p is not None]))
print(total)
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - started, out.stdout


def limit(paths: list[Path], cores: int, code: str = LIMIT) -> tuple[float, int]:
    """Wall time and frames of decode + FaceMesh (or `code`), one process per clip, `cores` at a time, the longest
    clips first, each core taking the next clip as soon as it is free (the build orders its videos the same way)."""
    out = Path(tempfile.mkdtemp(prefix="posetalk-floor-"))

    def one(i_path: tuple[int, Path]) -> int:
        i, path = i_path
        done = subprocess.run([PYTHON, "-c", code, str(path), str(out / f"{i}.mp4")], capture_output=True, text=True)
        return int(done.stdout.strip().splitlines()[-1])

    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        frames = sum(pool.map(one, enumerate(sorted(paths, key=lambda p: p.stat().st_size, reverse=True))))
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return seconds, frames


def script(paths: list[Path]) -> tuple[float, int]:
    seconds, out = timed([PYTHON, "-c", SCRIPT, *map(str, paths)])
    return seconds, int(out.strip().splitlines()[-1])


def build(folder: Path, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return timed([str(Path(PYTHON).with_name("posetalk-data")), "build", "--src", "folder", "--input", str(folder),
                  "--out", str(out), "--profile", "offline", *extra], env)[0]


def peak_mb(path: Path, cache_mb: int | None = None) -> float:
    """Peak RSS (MB) of one in-process worker (its ffmpeg children included) building one clip."""
    overrides = [] if cache_mb is None else [f"facetrack.frame_cache_mb={cache_mb}"]
    code = ("import resource, sys; from posetalk_data.config import load_config; "
            "from posetalk_data.pipeline import VideoProcessor; from posetalk_data.schema import VideoSpec; "
            f"VideoProcessor(load_config(None, {overrides!r}))(VideoSpec('folder', 'x', sys.argv[1])); "
            "r = resource.getrusage; print((r(resource.RUSAGE_SELF).ru_maxrss + "
            "r(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)")
    return float(timed([PYTHON, "-c", code, str(path)])[1].strip().splitlines()[-1])


def measure(paths: list[Path], folder: Path, out: Path, extra: list[str], repeat: int, cores: int, *,
            with_script: bool) -> tuple[dict[str, list[float]], int]:
    """Seconds of each command over `repeat` runs (limit, floor, the script if asked, build), and the frames."""
    rows: dict[str, list[float]] = {"limit": [], "floor": [], **({"script": []} if with_script else {}), "build": []}
    frames = 0
    for _ in range(repeat):
        seconds, frames = limit(paths, cores)
        rows["limit"].append(seconds)
        rows["floor"].append(limit(paths, cores, FLOOR)[0])
        if with_script:
            rows["script"].append(script(paths)[0])
        rows["build"].append(build(folder, out, extra))
    return rows, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=SAMPLES, help="folder of clips (default: the sample videos)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--steady-min", type=float, default=5.0, help="minutes of video for the steady state "
                                                                      "(0: skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="build overrides")
    args = parser.parse_args()
    if not args.input.is_dir():
        sys.exit(f"clips not found at {args.input}")
    from posetalk_data.media import probe

    cores = os.cpu_count() or 1
    paths = sorted(p for p in args.input.iterdir() if p.is_file())
    durations = {p: probe(p).duration for p in paths}
    seconds_of_video = sum(durations.values())
    extra = [a for s in args.set for a in ("--set", s)]
    work = Path(tempfile.mkdtemp(prefix="posetalk-bench-"))
    try:
        rows, frames = measure(paths, args.input, work / "out", extra, args.repeat, cores, with_script=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"clips: {len(paths)} ({seconds_of_video:.1f} s of video, {frames} frames at 25 fps); {cores} cores; "
              f"median of {args.repeat}")
        names = {"limit": "decode + FaceMesh alone, a process per clip", "floor": "limit + crop + H.264 encode, a "
                 "process per clip", "script": "sequential script (ffmpeg -> PNG -> FaceMesh)",
                 "build": "posetalk-data build --profile offline"}
        for key, label in names.items():
            print(f"{label:<48} {med[key]:7.1f} s   {frames / med[key]:7.1f} frames/s   "
                  f"runs {', '.join(f'{s:.1f}' for s in rows[key])}")
        steady = None
        if args.steady_min > 0:
            folder = work / "steady"
            folder.mkdir()
            copies = max(1, int(-(-args.steady_min * 60 // seconds_of_video)))
            for i in range(copies):
                for p in paths:
                    (folder / f"{i:02d}_{p.name}").symlink_to(p.resolve())
            long_paths = sorted(folder.iterdir())
            runs, n = measure(long_paths, folder, work / "steady_out", extra, args.repeat, cores, with_script=False)
            lim, floor, built = (statistics.median(runs[k]) for k in ("limit", "floor", "build"))
            steady = (n / built) / (n / lim)
            marginal = (n - frames) / (built - med["build"])
            print(f"steady state ({copies} x the clips, {n} frames, median of {args.repeat}), whole processes: limit "
                  f"{n / lim:.1f} frames/s, floor {n / floor:.1f} frames/s, build {n / built:.1f} frames/s; build's "
                  f"marginal rate {marginal:.1f} frames/s; runs (s): " +
                  "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vs)}" for k, vs in runs.items()))
        longest = max(paths, key=durations.get)
        double = work / f"double{longest.suffix}"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-stream_loop", "1", "-i", str(longest), "-c",
                        "copy", str(double)], check=True)
        for cache, label in ((None, "default frame cache"), (0, "frame_cache_mb=0")):
            print(f"peak memory of one worker ({label}): {peak_mb(longest, cache):.0f} MB on {longest.name} "
                  f"({durations[longest]:.1f} s), {peak_mb(double, cache):.0f} MB on it twice as long")
        print(f"ratio build / script time: {med['build'] / med['script']:.2f} (target <= 0.5)")
        if steady is not None:
            print(f"ratio build / limit throughput, steady state: {steady:.2f} whole process (target >= 0.75), "
                  f"{marginal / (n / lim):.2f} marginal; floor / limit {lim / floor:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
