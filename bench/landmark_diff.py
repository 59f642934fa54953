"""How far a change moves the landmarks: the same clips built by two source trees, landmarks.npy compared per clip.

    python bench/landmark_diff.py --base /work/main [--new .] [--input ../shared/samples/videos]

Each tree builds the clips (`posetalk-data build --src folder --profile offline`, the tree picked by PYTHONPATH);
then per sample key found in both: the mean and 95th percentile distance, in pixels of the crop (x, y in 0..1 of
the crop times facetrack.crop_size), between the two trees' points on the same frames, and the largest head pose
difference (degrees). Keys or frame counts that differ are listed.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build(tree: Path, folder: Path, out: Path, crop: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    subprocess.run([sys.executable, "-m", "posetalk_data.cli", "build", "--src", "folder", "--input", str(folder),
                    "--out", str(out), "--profile", "offline", "--set", f"facetrack.crop_size={crop}"],
                   env=env, check=True, capture_output=True, cwd=tree)   # `-m` puts the cwd first on sys.path


def arrays(out: Path, member: str) -> dict[str, np.ndarray]:
    found = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                if info.name.endswith(f".{member}"):
                    found[info.name[: -len(member) - 1]] = np.load(io.BytesIO(tar.extractfile(info).read()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the tree to compare against (e.g. /work/main)")
    parser.add_argument("--new", type=Path, default=REPO)
    parser.add_argument("--input", type=Path, default=REPO.parent / "shared" / "samples" / "videos")
    parser.add_argument("--crop-size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="posetalk-lmdiff-") as tmp:
        outs = [Path(tmp) / "base", Path(tmp) / "new"]
        for tree, out in zip((args.base, args.new), outs):
            build(tree.resolve(), args.input, out, args.crop_size)
        (base, new), (pose_a, pose_b) = ([arrays(o, m) for o in outs] for m in ("landmarks.npy", "pose.npy"))
    means, p95s = [], []
    for key in sorted(base.keys() | new.keys()):
        if key not in base or key not in new:
            print(f"{key}: only in {'base' if key in base else 'new'}")
            continue
        a, b = base[key].astype(np.float64), new[key].astype(np.float64)
        if a.shape != b.shape:
            print(f"{key}: shapes differ {a.shape} vs {b.shape}")
            continue
        px = np.linalg.norm((a[..., :2] - b[..., :2]) * args.crop_size, axis=-1)
        pose = np.abs(pose_a[key][:, :3].astype(np.float64) - pose_b[key][:, :3]).max()
        means.append(px.mean()), p95s.append(np.percentile(px, 95))
        print(f"{key}: {len(a)} frames, landmarks mean {px.mean():.2f} px, p95 {p95s[-1]:.2f} px, max "
              f"{px.max():.2f} px; largest yaw/pitch/roll difference {pose:.2f} deg")
    if means:
        print(f"all clips: mean of means {np.mean(means):.2f} px, largest p95 {max(p95s):.2f} px "
              f"(crop {args.crop_size} px)")


if __name__ == "__main__":
    main()
