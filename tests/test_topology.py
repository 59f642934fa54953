"""The model workers' pool (issue 13): speech, text and encoding in workers of their own, asking Ray for a GPU share,
fed by the video workers; tested on the CPU with a logical GPU (Ray schedules GPU shares it cannot see)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
from pathlib import Path
import ray
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
from posetalk_data.build import build
from posetalk_data.config import load_config
from posetalk_data.runner import WorkerPool
from posetalk_data.sources.folder import folder_specs
root, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = load_config(None, ["facetrack.crop_size=128", "write.videos_per_shard=1", "models.workers=2",
                         "models.gpus=0.5", "models.batch_clips=1"])
pool = WorkerPool(cfg, workers=2, videos=2)
placed = {"video": ray.get([a.resources.remote() for a in pool.actors]),
          "models": ray.get([a.resources.remote() for a in pool.model_workers()])}
pool.close()
build(folder_specs(root), out, cfg, source="folder", root=root, workers=2)
print(json.dumps(placed))
"""


def test_model_workers_take_gpu_shares_and_change_no_byte(samples, tmp_path):
    from posetalk_data.build import build
    from posetalk_data.config import load_config
    from posetalk_data.sources.folder import folder_specs

    root = tmp_path / "in"
    root.mkdir()
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        (root / name).symlink_to(samples / "videos" / name)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(tmp_path / "pooled")], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-3000:]
    placed = json.loads(run.stdout.strip().splitlines()[-1])
    assert [p.get("GPU") for p in placed["models"]] == [0.5, 0.5]          # two model workers, half a GPU each
    assert all("GPU" not in p and p.get("CPU") == 1 for p in placed["video"])
    cfg = load_config(None, ["facetrack.crop_size=128", "write.videos_per_shard=1"])
    build(folder_specs(root), tmp_path / "inline", cfg, source="folder", root=root, workers=0)
    shards = lambda out: [p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))]   # noqa: E731
    assert shards(tmp_path / "pooled") == shards(tmp_path / "inline") and len(shards(tmp_path / "inline")) == 2
