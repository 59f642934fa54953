"""Builds on a Ray cluster and an object store: one node vs two nodes of one CPU each, local disk vs an S3 server,
and from those figures a projection for a large dataset (the README's scaling section quotes it).

The sample clips (../shared/samples/videos, or --input) linked again and again until they hold at least --minutes
of video; an S3-compatible server (moto's, on a local port) holds a copy for the s3 runs. Each scenario runs its
driver in a fresh process that starts a Ray cluster of --nodes nodes (ray.cluster_utils.Cluster: the head and each
further node one CPU, the further nodes in another working directory), builds the clips with one video worker per
node, and reports:

frames/s          : frames kept over the build's wall time (from build() to its manifest; workers' start included)
start-up s        : from build() to the first video's face tracking (timings.json's startup_seconds)
driver CPU s/clip : the driver process's CPU time (user + system, all its threads) from build() until the videos are
                    done, over the clips (its imports before, and the tables, card and report after: once per build,
                    not per clip; the latter is reported as driver_outputs_cpu_s)
driver MB         : the driver's peak resident memory (ru_maxrss), and its growth until the videos are done per clip
driver kB/clip    : bytes the driver received from Ray (every ray.get, pickled size) over the clips: the target is no
                    media, only summaries and group records of a few kB
in/out kB/frame   : source bytes read and shard bytes written per frame kept (what the store carries)

Ratios: each scenario's frames/s over the one-node disk run's (two nodes of one CPU on one machine share its
cores: the ratio shows what Ray's placement and the store cost, not a second machine's cores).

Projection (printed after the table; --clips, --clip-seconds, --nodes, --cores, --price, --store-gbps): the driver
saturates its one core when N x C reaches frames per clip / (frames/s per core x driver CPU s per clip), the store
when N x C x frames/s per core x (in + out bytes per frame) reaches its bandwidth; wall time = frames / (min(N x C,
those two bounds) x frames/s per core); cost = wall hours x N x C x price per core-hour. Per-core figures: the
two-node S3 scenario (the cluster case), else the best one run.

`--quick` is a smoke run (two GRID clips, 64 px crops, no repetition). `--report FILE` prints the table and the
projection again from a saved --json, without building. Run on a quiet machine for figures worth quoting.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "videos"
CELEBV_INFO = REPO.parent / "shared" / "metadata" / "celebv-text" / "celebvtext_info.json"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
FPS = 25

DRIVER = r"""
import json, os, pickle, resource, sys, tempfile, time
import ray
from ray.cluster_utils import Cluster

nodes, src, out, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
began = time.perf_counter()
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
here = os.getcwd()
for _ in range(nodes - 1):
    os.chdir(tempfile.mkdtemp(prefix="bench-node-"))
    cluster.add_node(num_cpus=1)
os.chdir(here)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()
cluster_s = time.perf_counter() - began

received = [0]
plain_get = ray.get
def counting_get(refs, *args, **kwargs):
    value = plain_get(refs, *args, **kwargs)
    received[0] += len(pickle.dumps(value))
    return value
ray.get = counting_get          # the pool calls ray.get through the module: every object the driver receives

from posetalk_data import storage
from posetalk_data.build import build
from posetalk_data.config import load_config
from posetalk_data.sources import source_plan

plan = source_plan("folder", src, out)
import webdataset, posetalk_data.report    # what build() imports anyway: fixed costs, not per clip
import posetalk_data.build as building
at_outputs = []
plain_outputs = building.write_outputs
def outputs_after_the_videos(*args, **kwargs):   # the tables, the card and the report: once per build, not per clip
    at_outputs.append((time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    return plain_outputs(*args, **kwargs)
building.write_outputs = outputs_after_the_videos
cpu0, rss0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = build(plan.specs, out, load_config(None, overrides), source="folder", root=plan.root, workers=nodes,
               address=cluster.address, sizes=plan.sizes)
cpu_end, rss = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(cpu_videos, rss_videos), = at_outputs
cpu, outputs_cpu = cpu_videos - cpu0, cpu_end - cpu_videos
clips = max(result.kept + result.dropped, 1)
print(json.dumps({"nodes": nodes, "videos": len(plan.specs), "clips": result.kept, "frames": result.frames,
                  "cluster_s": round(cluster_s, 2), "build_s": round(result.seconds, 2),
                  "startup_s": None if result.startup is None else round(result.startup, 2),
                  "frames_per_s": round(result.frames / max(result.seconds, 1e-9), 2),
                  "driver_cpu_s_per_clip": round(cpu / clips, 4),
                  "driver_outputs_cpu_s": round(outputs_cpu, 2),
                  "driver_peak_mb": round(rss / 1024, 1),
                  "driver_growth_kb_per_clip": round((rss_videos - rss0) / clips, 1),
                  "driver_kb_per_clip": round(received[0] / clips / 1024, 2),
                  "source_bytes": sum(plan.sizes.values()) if plan.sizes else None,
                  "shard_bytes": sum(s["bytes"] for s in result.manifest["shards"])}))
ray.shutdown()
cluster.shutdown()
"""


def duration(path: Path) -> float:
    from posetalk_data.media import probe

    return probe(path).duration


def repeated_input(clips: list[Path], minutes: float, folder: Path) -> tuple[Path, int]:
    """The clips linked as copy0/, copy1/, ... until they hold `minutes` of video (at least one copy); the folder
    and its source bytes."""
    total, per_copy, copy, size = 0.0, sum(duration(c) for c in clips), 0, 0
    while copy == 0 or total < minutes * 60:
        for clip in clips:
            (folder / f"copy{copy}").mkdir(parents=True, exist_ok=True)
            (folder / f"copy{copy}" / clip.name).symlink_to(clip.resolve())
            size += clip.stat().st_size
        total, copy = total + per_copy, copy + 1
    return folder, size


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


def scenarios(args, clips: list[Path]) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    folder, source_bytes = repeated_input(clips, args.minutes, work / "videos")
    overrides = [f"facetrack.crop_size={args.crop}", "write.videos_per_shard=8"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    server, results = None, []
    try:
        for item in args.scenarios.split(","):
            nodes, store = item.split(":")
            if store == "s3":
                if server is None:
                    import logging

                    from moto.server import ThreadedMotoServer

                    logging.getLogger("werkzeug").setLevel(logging.WARNING)     # not a line per request
                    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                    server.start()
                    env |= {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_port}"}
                    os.environ.update({k: env[k] for k in (*S3_ENV, "AWS_ENDPOINT_URL")})
                    s3_src = upload(folder, "bench")
                src, out = s3_src, f"s3://bench/builds/{nodes}-{time.time_ns()}"
            else:
                src, out = str(folder), str(work / f"out-{nodes}-{time.time_ns()}")
            result = {"store": store, **run(int(nodes), src, out, overrides, env)}
            result["source_bytes"] = result["source_bytes"] or source_bytes    # a local folder lists no sizes
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    finally:
        if server is not None:
            server.stop()
    return results


# ------------------------------------------------------------------ the table and the projection
def table(results: list[dict]) -> str:
    base = next((r["frames_per_s"] for r in results if r["nodes"] == 1 and r["store"] == "disk"), None)
    rows = [("scenario", "frames/s", "x 1-node disk", "per CPU", "start-up s", "drv CPU s/clip", "drv peak MB",
             "drv +kB/clip", "drv kB/clip", "in kB/frame", "out kB/frame")]
    for r in results:
        frames = max(r["frames"], 1)
        rows.append((f"{r['nodes']} node(s), {r['store']}", f"{r['frames_per_s']:.1f}",
                     f"{r['frames_per_s'] / base:.2f}" if base else "-", f"{r['frames_per_s'] / r['nodes']:.1f}",
                     "-" if r.get("startup_s") is None else f"{r['startup_s']:.1f}",
                     f"{r['driver_cpu_s_per_clip']:.3f}", f"{r['driver_peak_mb']:.0f}",
                     f"{r['driver_growth_kb_per_clip']:.0f}",
                     f"{r['driver_kb_per_clip']:.1f}", f"{r['source_bytes'] / frames / 1024:.1f}",
                     f"{r['shard_bytes'] / frames / 1024:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


def mean_clip_seconds(default: float = 8.0) -> tuple[float, str]:
    """CelebV-Text's mean clip length from the shared metadata sample (its annotated spans), else `default`."""
    try:
        spans = json.loads(CELEBV_INFO.read_text()).values()
        lengths = [s["duration"]["end_sec"] - s["duration"]["start_sec"] for s in spans]
        return statistics.fmean(lengths), f"mean of {len(lengths)} annotated CelebV-Text clips in {CELEBV_INFO.name}"
    except (OSError, ValueError, KeyError, statistics.StatisticsError):
        return default, "assumed"


def per_core(results: list[dict]) -> dict:
    """The figures a projection scales: from the two-node S3 run (the cluster case), else the fastest per CPU."""
    pick = next((r for r in results if r["nodes"] == 2 and r["store"] == "s3"), None)
    pick = pick or max(results, key=lambda r: r["frames_per_s"] / r["nodes"])
    frames = max(pick["frames"], 1)
    return {"from": f"{pick['nodes']} node(s), {pick['store']}", "fps": pick["frames_per_s"] / pick["nodes"],
            "driver_cpu": pick["driver_cpu_s_per_clip"], "driver_kb": pick["driver_kb_per_clip"],
            "bytes_per_frame": (pick["source_bytes"] + pick["shard_bytes"]) / frames}


def projection(results: list[dict], args) -> str:
    f = per_core(results)
    clip_s, where = (args.clip_seconds, "given") if args.clip_seconds else mean_clip_seconds()
    frames = args.clips * clip_s * FPS
    lines = [f"projection: {args.clips:,} clips of {clip_s:.1f} s ({where}) = {frames / 1e6:.1f} M frames at {FPS} "
             f"fps; per core {f['fps']:.2f} frames/s, driver {f['driver_cpu']:.4f} CPU s and {f['driver_kb']:.1f} kB "
             f"per clip, store {f['bytes_per_frame'] / 1024:.1f} kB per frame (from {f['from']})"]
    driver_cores = clip_s * FPS / max(f["fps"] * f["driver_cpu"], 1e-12)     # N x C at which the driver is busy
    store_cores = args.store_gbps * 1e9 / 8 / max(f["fps"] * f["bytes_per_frame"], 1e-12)
    lines.append(f"{'nodes':>6} {'cores':>6} {'wall h':>9} {'cost':>10} {'driver busy':>12} {'store busy':>11}"
                 "  bound by")
    for nodes in (int(n) for n in args.nodes.split(",")):
        cores = nodes * args.cores
        bound = max(("cores", cores), ("driver", driver_cores), ("store", store_cores), key=lambda b: -b[1])
        hours = frames / (min(cores, driver_cores, store_cores) * f["fps"]) / 3600   # past a bound, cores idle
        lines.append(f"{nodes:>6} {cores:>6} {hours:>9.1f} {hours * cores * args.price:>10,.0f} "
                     f"{100 * cores / driver_cores:>11.1f}% {100 * cores / store_cores:>10.1f}%  {bound[0]}")
    lines.append(f"cost at {args.price} per core-hour; the driver's one core is saturated at N x C = "
                 f"{driver_cores:,.0f} cores, a {args.store_gbps:g} Gbit/s store at N x C = {store_cores:,.0f} cores; "
                 f"the driver receives {args.clips * f['driver_kb'] / 1024:,.0f} MB in all")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=SAMPLES, help="folder of clips")
    parser.add_argument("--minutes", type=float, default=5.0, help="video to build, at least (clips repeated)")
    parser.add_argument("--crop", type=int, default=256, help="facetrack.crop_size")
    parser.add_argument("--scenarios", default="1:disk,2:disk,1:s3,2:s3", help="nodes:store, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: the two GRID clips, 64 px, no repetition")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--report", type=Path, help="print the table and projection of a saved --json; no build")
    projected = parser.add_argument_group("projection")
    projected.add_argument("--clips", type=int, default=70_000, help="clips of the dataset (CelebV-Text: 70,000)")
    projected.add_argument("--clip-seconds", type=float, help="mean clip length (default: from shared metadata)")
    projected.add_argument("--nodes", default="1,4,16,64", help="node counts N to project")
    projected.add_argument("--cores", type=int, default=32, help="cores C per node")
    projected.add_argument("--price", type=float, default=0.04, help="price per core-hour (example currency units)")
    projected.add_argument("--store-gbps", type=float, default=10.0, help="the store's aggregate bandwidth, Gbit/s")
    args = parser.parse_args()

    if args.report:
        report = json.loads(args.report.read_text())
    else:
        clips = sorted(p for p in args.input.iterdir() if p.suffix in {".mp4", ".mpg", ".mov", ".mkv"})
        if args.quick:
            clips, args.minutes, args.crop = [c for c in clips if c.name.startswith("grid_")][:2], 0.0, 64
        report = {"minutes": args.minutes, "crop": args.crop, "clips": [c.name for c in clips],
                  "load": os.getloadavg(), "results": scenarios(args, clips)}
        report["load_after"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    print(f"{report['minutes']} min of video, {report['crop']} px crops, load average before/after "
          f"{report.get('load', ['?'])[0]} / {report.get('load_after', ['?'])[0]}")
    print(table(report["results"]))
    print(projection(report["results"], args))


if __name__ == "__main__":
    main()
