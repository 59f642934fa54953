"""The one module that knows Ray: runs the pipeline's VideoProcessor in a pool of actors.

Each actor loads the models once (setup) and processes whole videos; the driver keeps a bounded number of
videos in flight and receives finished samples as bytes, so workers need no shared output filesystem.
`workers=0` runs everything in this process (debugging, profiling).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .config import PipelineConfig
from .pipeline import VideoProcessor, VideoResult, worker_resources
from .schema import ClipRecord, VideoSpec


def _ensure_ray(address: str | None, num_cpus: int | None):
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def default_workers(address: str | None = None) -> int:
    """One worker per CPU of the cluster (local: this machine)."""
    if address:
        ray = _ensure_ray(address, None)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, os.cpu_count() or 1)


class RayVideoProcessor(VideoProcessor):
    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def run_videos(specs: Iterable[VideoSpec], cfg: PipelineConfig, *, workers: int, address: str | None = None,
               on_start: Callable[[list[str]], None] | None = None) -> Iterator[tuple[VideoSpec, VideoResult]]:
    """Yield (spec, result) for every input video as workers finish them (in completion order).

    `on_start` receives the Ray node id of each worker once they are placed (workers are spread over nodes).
    """
    specs = list(specs)
    if workers == 0:
        processor = VideoProcessor(cfg)
        for spec in specs:
            yield spec, processor(spec)
        return
    ray = _ensure_ray(address, None)
    need = worker_resources(VideoProcessor(cfg).stages)
    actor_cls = ray.remote(RayVideoProcessor).options(num_cpus=need.cpus, num_gpus=need.gpus,
                                                      scheduling_strategy="SPREAD")
    actors = [actor_cls.remote(cfg) for _ in range(min(workers, len(specs)) or 1)]
    if on_start:
        on_start(ray.get([a.node_id.remote() for a in actors]))
    pending: dict = {}
    queue = list(reversed(specs))
    retried: set[int] = set()

    def submit(actor) -> None:
        spec = queue.pop()
        pending[actor.__call__.remote(spec)] = (actor, spec)

    for actor in actors:
        if queue:
            submit(actor)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, spec = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as err:   # the worker died (killed, OOM, segfault): replace it
                ray.kill(actor)
                actors.remove(actor)
                actor = actor_cls.remote(cfg)
                actors.append(actor)
                if id(spec) not in retried:          # once more on a fresh worker: a kill is not the video's fault
                    retried.add(id(spec))
                    queue.append(spec)
                    submit(actor)
                    continue
                result = VideoResult([_lost(spec, err)])
            if queue:
                submit(actor)
            yield spec, result
    finally:
        for actor in actors:
            ray.kill(actor)


def _lost(spec: VideoSpec, err: Exception) -> ClipRecord:
    record = ClipRecord(spec=spec, workdir=Path("."))
    record.errors["worker"] = (f"the worker processing this video died twice: {type(err).__name__}: "
                               f"{str(err)[:300]}")
    return record
