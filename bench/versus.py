"""This tree's build against another tree's (a commit before a change), as whole processes, in one run.

    git worktree add --detach ../base <commit>
    python bench/versus.py --baseline ../base [--steady-min 5] [--repeat 3] [--set KEY=VALUE ...]

Both builds run `posetalk-data build --src folder --profile offline` from their own source tree (PYTHONPATH) with
this venv's packages, on the sample clips linked again and again to --steady-min minutes of video, alternating
(baseline, ours, baseline, ours, ...) so a drift of the machine hits both; prints frames/s of each (median of
--repeat) and the ratio ours / baseline, and the median start-up (timings.json's startup_seconds: the command to
the first video's face tracking; "-" for a tree that does not record it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"


def steady_folder(clips: Path, folder: Path, minutes: float) -> None:
    """The clips linked again and again until they hold `minutes` of video."""
    from posetalk_data.media import probe

    paths = sorted(p for p in clips.iterdir() if p.is_file())
    seconds = sum(probe(p).duration for p in paths)
    for i in range(max(1, int(-(-minutes * 60 // seconds)))):
        for p in paths:
            (folder / f"{i:02d}_{p.name}").symlink_to(p.resolve())


def build(tree: Path, folder: Path, out: Path, extra: list[str]) -> tuple[float, int, float | None]:
    """Wall seconds of one whole build process from `tree`, the frames it kept, and its start-up seconds."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "posetalk_data.cli", "build", "--src", "folder", "--input", str(folder),
                    "--out", str(out), "--profile", "offline", *extra], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree)
    seconds = time.perf_counter() - started
    timings = json.loads((out / "timings.json").read_text())
    return seconds, timings["frames"], timings.get("startup_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other source tree (a git worktree)")
    parser.add_argument("--input", type=Path, default=SAMPLES, help="folder of clips (default: the sample videos)")
    parser.add_argument("--steady-min", type=float, default=5.0, help="minutes of video per build")
    parser.add_argument("--repeat", type=int, default=3, help="builds per tree (median)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for both")
    args = parser.parse_args()
    extra = [a for s in args.set for a in ("--set", s)]
    work = Path(tempfile.mkdtemp(prefix="posetalk-versus-"))
    try:
        folder = work / "in"
        folder.mkdir()
        steady_folder(args.input, folder, args.steady_min)
        runs: dict[str, list[tuple[float, int, float | None]]] = {"baseline": [], "ours": []}
        for _ in range(args.repeat):
            for name, tree in (("baseline", args.baseline.resolve()), ("ours", REPO)):
                runs[name].append(build(tree, folder, work / name, extra))
        rate = {}
        for name, rows in runs.items():
            rate[name] = statistics.median(frames / seconds for seconds, frames, _ in rows)
            startups = [up for *_, up in rows if up is not None]
            startup = f"{statistics.median(startups):.1f} s" if startups else "-"
            print(f"{name:<9} {rate[name]:7.1f} frames/s (median of {len(rows)}), start-up {startup}; runs: "
                  + ", ".join(f"{s:.1f} s / {f} frames" for s, f, _ in rows))
        print(f"ratio ours / baseline: {rate['ours'] / rate['baseline']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
