"""The one module that knows Ray: runs the pipeline's VideoProcessor in a pool of actors.

Each actor loads the models once (setup) and processes whole videos; the driver keeps a bounded number of
videos in flight and receives finished samples as bytes, so workers need no shared output filesystem.
`workers=0` runs everything in this process (debugging, profiling).

The pool starts its actors, and has them load their models, as soon as it is made: the driver prepares the build
(the manifest fingerprint, staging) meanwhile, and takes the model versions from a worker that has loaded them
rather than loading every model a second time itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

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


class WorkerPool:
    """`workers` actors (at most one per video), loading their models from the start; or, with workers=0, this
    process. `run(specs)` yields (spec, result) as videos finish; `close()` ends the actors."""

    def __init__(self, cfg: PipelineConfig, *, workers: int, address: str | None = None,
                 videos: int | None = None):
        self.cfg = cfg
        self.processor = self.actors = None
        if workers == 0:
            self.processor = VideoProcessor(cfg)
            return
        self.ray = _ensure_ray(address, None)
        need = worker_resources(VideoProcessor(cfg).stages)
        self.actor_cls = self.ray.remote(RayVideoProcessor).options(num_cpus=need.cpus, num_gpus=need.gpus,
                                                                    scheduling_strategy="SPREAD")
        self.actors = [self._start() for _ in range(max(1, min(workers, videos or workers)))]

    def _start(self):
        actor = self.actor_cls.remote(self.cfg)
        actor.setup.remote()            # the models load now, while the driver gets on with its part
        return actor

    def versions(self) -> dict[str, str]:
        """The stages' model versions, from a worker that has loaded the models (or from this process)."""
        if self.processor is not None:
            return self.processor.versions()
        return self.ray.get(self.actors[0].versions.remote())

    def nodes(self) -> list[str]:
        """The Ray node id of each worker ([] in-process)."""
        return self.ray.get([a.node_id.remote() for a in self.actors]) if self.actors else []

    def run(self, specs: Iterable[VideoSpec]) -> Iterator[tuple[VideoSpec, VideoResult]]:
        """(spec, result) for every video as workers finish them (in completion order). A worker that dies (killed,
        OOM, segfault) is replaced and its video tried once more on the fresh one."""
        specs = list(specs)
        if self.processor is not None:
            for spec in specs:
                yield spec, self.processor(spec)
            return
        # longest first, so no worker is left with a long video while the others idle at the end
        ray, pending, queue, retried = self.ray, {}, sorted(specs, key=expected_work), set()

        def submit(actor) -> None:
            spec = queue.pop()
            pending[actor.__call__.remote(spec)] = (actor, spec)

        for actor in self.actors:
            if queue:
                submit(actor)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, spec = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as err:   # the worker died: replace it
                ray.kill(actor)
                self.actors.remove(actor)
                actor = self._start()
                self.actors.append(actor)
                if id(spec) not in retried:          # once more on a fresh worker: a kill is not the video's fault
                    retried.add(id(spec))
                    queue.append(spec)
                    submit(actor)
                    continue
                result = VideoResult([_lost(spec, err)])
            if queue:
                submit(actor)
            yield spec, result

    def close(self) -> None:
        for actor in self.actors or []:
            self.ray.kill(actor)
        self.actors = []


def expected_work(spec: VideoSpec) -> float:
    """How much work a video is likely to be, for ordering (a queue pops from its end: the largest last here)."""
    if spec.end is not None:
        return spec.end - (spec.start or 0.0)
    try:
        return Path(spec.path).stat().st_size / 1e5     # ~ seconds of a typical face video; only the order matters
    except OSError:
        return 0.0


def run_videos(specs: Iterable[VideoSpec], cfg: PipelineConfig, *, workers: int, address: str | None = None
               ) -> Iterator[tuple[VideoSpec, VideoResult]]:
    """Every video through a pool made for them (see WorkerPool.run)."""
    specs = list(specs)
    pool = WorkerPool(cfg, workers=workers, address=address, videos=len(specs))
    try:
        yield from pool.run(specs)
    finally:
        pool.close()


def _lost(spec: VideoSpec, err: Exception) -> ClipRecord:
    record = ClipRecord(spec=spec, workdir=Path("."))
    record.errors["worker"] = (f"the worker processing this video died twice: {type(err).__name__}: "
                               f"{str(err)[:300]}")
    return record
