"""Builds on a Ray cluster and an object store: one node vs two nodes of one CPU each, local disk vs an S3 server.

The sample clips (../shared/samples/videos, or --input) linked again and again until they hold at least --minutes
of video; an S3-compatible server (moto's, on a local port) holds a copy for the s3 runs. Each scenario runs its
driver in a fresh process that starts a Ray cluster of --nodes nodes (ray.cluster_utils.Cluster: the head and each
further node one CPU, the further nodes in another working directory), builds the clips with one video worker per
node, and reports:

frames/s         : frames kept over the build's wall time (start-up included)
driver CPU s/clip: the driver process's CPU time (user + system) over the clips built
driver peak MB   : the driver process's peak resident memory (ru_maxrss)
driver kB/clip   : bytes the driver received from Ray (every ray.get, pickled size) over the clips built: the target
                   is no media, only summaries and group records of a few kB

`--quick` is a smoke run (two GRID clips, 64 px crops, no repetition). Results as JSON on stdout (and --json FILE);
run on a quiet machine for figures worth quoting (README: scaling).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

DRIVER = r"""
import json, os, pickle, resource, sys, tempfile, time
started = time.perf_counter()
import ray
from ray.cluster_utils import Cluster

nodes, src, out, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
here = os.getcwd()
for _ in range(nodes - 1):
    os.chdir(tempfile.mkdtemp(prefix="bench-node-"))
    cluster.add_node(num_cpus=1)
os.chdir(here)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()

received = [0]
plain_get = ray.get
def counting_get(refs, *args, **kwargs):
    value = plain_get(refs, *args, **kwargs)
    received[0] += len(pickle.dumps(value))
    return value
ray.get = counting_get          # the pool calls ray.get through the module: every object the driver receives

from posetalk_data.build import build
from posetalk_data.config import load_config
from posetalk_data.sources import source_plan

plan = source_plan("folder", src, out)
cpu0 = time.process_time()
result = build(plan.specs, out, load_config(None, overrides), source="folder", root=plan.root, workers=nodes,
               address=cluster.address, sizes=plan.sizes)
usage = resource.getrusage(resource.RUSAGE_SELF)
clips = max(result.kept + result.dropped, 1)
print(json.dumps({"nodes": nodes, "videos": len(plan.specs), "clips": result.kept, "frames": result.frames,
                  "seconds": round(time.perf_counter() - started, 2),
                  "frames_per_s": round(result.frames / max(time.perf_counter() - started, 1e-9), 2),
                  "driver_cpu_s_per_clip": round((usage.ru_utime + usage.ru_stime) / clips, 3),
                  "driver_peak_mb": round(usage.ru_maxrss / 1024, 1),
                  "driver_kb_per_clip": round(received[0] / clips / 1024, 2)}))
ray.shutdown()
cluster.shutdown()
"""


def duration(path: Path) -> float:
    from posetalk_data.media import probe

    return probe(path).duration


def repeated_input(clips: list[Path], minutes: float, folder: Path) -> Path:
    """The clips linked as copy0/, copy1/, ... until they hold `minutes` of video (at least one copy)."""
    total, per_copy, copy = 0.0, sum(duration(c) for c in clips), 0
    while copy == 0 or total < minutes * 60:
        for clip in clips:
            (folder / f"copy{copy}").mkdir(parents=True, exist_ok=True)
            (folder / f"copy{copy}" / clip.name).symlink_to(clip.resolve())
        total, copy = total + per_copy, copy + 1
    return folder


def upload(folder: Path, bucket: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir(bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.put_file(str(path.resolve()), f"{bucket}/videos/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/videos"


def run(nodes: int, src: str, out: str, overrides: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(nodes), src, out, json.dumps(overrides)],
                          capture_output=True, text=True, env=env, cwd=tempfile.mkdtemp(prefix="bench-driver-"))
    if proc.returncode:
        raise SystemExit(f"scenario nodes={nodes} {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=SAMPLES, help="folder of clips")
    parser.add_argument("--minutes", type=float, default=5.0, help="video to build, at least (clips repeated)")
    parser.add_argument("--crop", type=int, default=256, help="facetrack.crop_size")
    parser.add_argument("--scenarios", default="1:disk,2:disk,1:s3,2:s3", help="nodes:store, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: the two GRID clips, 64 px, no repetition")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    clips = sorted(p for p in args.input.iterdir() if p.suffix in {".mp4", ".mpg", ".mov", ".mkv"})
    if args.quick:
        clips, args.minutes, args.crop = [c for c in clips if c.name.startswith("grid_")][:2], 0.0, 64
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    folder = repeated_input(clips, args.minutes, work / "videos")
    overrides = [f"facetrack.crop_size={args.crop}", "write.videos_per_shard=8"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    server = None
    results = []
    try:
        for item in args.scenarios.split(","):
            nodes, store = item.split(":")
            if store == "s3":
                if server is None:
                    from moto.server import ThreadedMotoServer

                    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                    server.start()
                    env |= {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_port}"}
                    os.environ.update({k: env[k] for k in (*S3_ENV, "AWS_ENDPOINT_URL")})
                    s3_src = upload(folder, "bench")
                src, out = s3_src, f"s3://bench/builds/{nodes}-{time.time_ns()}"
            else:
                src, out = str(folder), str(work / f"out-{nodes}-{time.time_ns()}")
            result = {"store": store, **run(int(nodes), src, out, overrides, env)}
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    finally:
        if server is not None:
            server.stop()
    report = {"minutes": args.minutes, "crop": args.crop, "clips": [c.name for c in clips], "results": results}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
