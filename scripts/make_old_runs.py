"""Make the tiny run folders in tests/data/runs-before-move/: one run of each model kind (vae, pld, coarse, refine,
enhance, sync) trained for a few steps with the code as it was before issue 18 moved posetalk_models into rooms, so
a test can check that run folders made before the move still load and generate.

  PYTHONPATH=$PWD python scripts/make_old_runs.py [OUT]   (default tests/data/runs-before-move; about a minute)

The build (64 px crops of the first 4 s of one sample clip) is made in a temporary folder and not kept; optimiser
states are dropped (loading needs the weights and sidecars only). Run it with the code before commit "issue 18: move".
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"
POSE = ["loop.progress=false", "loop.num_workers=0", "loop.batch_size=4", "loop.log_every=2", "loop.ckpt_every=4",
        "data.window=16", "model.d_model=16", "loop.max_steps=4"]
VIDEO = ["loop.progress=false", "loop.num_workers=0", "loop.log_every=2", "loop.ckpt_every=3", "loop.max_steps=3",
         "loop.batch_size=2"]
SMALL = ["model.base=4", "model.max_channels=16", "model.motion.hidden=16", "model.motion.latent=16"]


def tiny_build(out: Path) -> Path:
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.schema import VideoSpec

    clip = SAMPLES / "videos" / "liveportrait_d11.mp4"
    build([VideoSpec("folder", clip.name, str(clip), start=0.0, end=4.0)], out,
          load_config(None, ["facetrack.crop_size=64"]), source="folder", root=clip.parent, workers=0)
    return out / "manifest.json"


def train_all(manifest: Path, root: Path) -> None:
    from posetalk_models.config import load_train_config as cfg
    from posetalk_models.train_pld import train_pld
    from posetalk_models.train_sync import train_sync
    from posetalk_models.train_vae import train_vae
    from posetalk_models.train_video import train_coarse, train_enhance, train_refine

    train_vae(manifest, root / "vae", cfg("vae", None, POSE))
    train_pld(manifest, root / "pld", cfg("pld", None, [*POSE, "model.layers=1"]), vae_run=root / "vae")
    train_coarse(manifest, root / "coarse", cfg("coarse", None, [*VIDEO, *SMALL, "warp_only_steps=1"]))
    train_refine(manifest, root / "refine", cfg("refine", None, [*VIDEO, *SMALL]), coarse_run=root / "coarse")
    train_enhance(manifest, root / "enhance", cfg("enhance", None, [*VIDEO, "model.base=4", "model.max_channels=8",
                                                                  "model.disc_base=4"]), refine_run=root / "refine")
    train_sync(manifest, root / "sync", cfg("sync", None, [*VIDEO, "loop.batch_size=4", "model.base=4", "model.embed=16"]))


def main(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: remove it first")
    with tempfile.TemporaryDirectory() as tmp:
        train_all(tiny_build(Path(tmp) / "build"), out)
    for path in out.rglob("*"):
        if path.name.endswith((".opt.pt", ".lock")) or path.name.startswith("events.out"):
            path.unlink()
    for run in sorted(out.iterdir()):       # the training manifest is gone: say so instead of a dangling path
        print(run.name, sorted(p.name for p in run.iterdir()))
    print(f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "runs-before-move")
