"""The one module that knows Ray: runs the pipeline's VideoProcessor in a pool of actors.

Each actor loads the models once (setup) and processes whole videos; the driver keeps a bounded number of
videos in flight and receives finished samples as bytes, so workers need no shared output filesystem.
`workers=0` runs everything in this process (debugging, profiling).

The pool starts its actors, and has them load their models, as soon as it is made, and hands out the videos at
once; the driver takes the speech and text models' versions from a model worker, which has loaded them anyway,
rather than loading them a second time itself.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

from .config import PipelineConfig
from .pipeline import VideoProcessor, VideoResult, part_of, worker_resources
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

    def resources(self) -> dict[str, float]:
        """What Ray gave this worker (CPU, GPU shares)."""
        import ray

        return ray.get_runtime_context().get_assigned_resources()


class WorkerPool:
    """`workers` video actors (at most one per video), and, with `models.pool`, `models.workers` model actors that
    run the speech, text and encode stages on clips of several videos at once; or, with workers=0, this process.
    Every actor loads its models from the start. `start(specs)` hands the videos out, `results()` yields (spec,
    result) as videos finish; `close()` ends the actors."""

    def __init__(self, cfg: PipelineConfig, *, workers: int, address: str | None = None,
                 videos: int | None = None, processor: VideoProcessor | None = None):
        self.cfg, self.processor, self.actors, self.model_actors, self.node_refs = cfg, None, [], [], []
        self.plan = processor or VideoProcessor(cfg)    # the driver's stages: worker sizes and versions
        self._ending: threading.Thread | None = None
        if workers == 0:
            self.processor = self.plan                  # ... or the in-process run itself
            return
        import ray

        self.owns_ray = not ray.is_initialized()    # a local Ray this pool starts, and so ends
        self.ray = _ensure_ray(address, None)
        self.video_part = part = "video" if cfg.models.pool else "all"
        need = worker_resources(part_of(self.plan.stages, part))
        self.video_cls = self.ray.remote(RayVideoProcessor).options(num_cpus=need.cpus, num_gpus=need.gpus,
                                                                    scheduling_strategy="SPREAD")
        self.actors = [self._start(self.video_cls, part) for _ in range(max(1, min(workers, videos or workers)))]
        if cfg.models.pool:
            self.model_cls = self.ray.remote(RayVideoProcessor).options(num_cpus=cfg.models.cpus,
                                                                        num_gpus=cfg.models.gpus)
            self.model_actors = [self._start(self.model_cls, "models") for _ in range(cfg.models.workers)]

    def _start(self, cls, part: str):
        actor = cls.remote(self.cfg, part)
        actor.setup.remote()            # the models load now, while the driver gets on with its part
        if part != "models":            # asked now: an actor answers in order, after any video it was given
            self.node_refs.append(actor.node_id.remote())
        return actor

    def versions(self) -> dict[str, str]:
        """The stages' versions: the video stages' from this process (no model of theirs is loaded for it), the
        model stages' from a model worker, which has loaded the models anyway and has no video ahead of this
        question (without a model pool, or in-process, this process loads them)."""
        if not self.model_actors:
            return self.plan.versions()
        return {**self.plan.versions("video"), **self.ray.get(self.model_actors[0].versions.remote())}

    def nodes(self) -> list[str]:
        """The Ray node id of each video worker started ([] in-process; a worker already dead is left out)."""
        out = []
        for ref in self.node_refs:
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayError:
                pass
        return out

    def start(self, specs: Iterable[VideoSpec]) -> None:
        """Hand the videos to the workers now (longest first, so no worker is left with a long video while the
        others idle at the end)."""
        self.specs = list(specs)
        if self.processor is not None:
            return
        self.queue, self.pending, self.retried = sorted(self.specs, key=expected_work), {}, set()
        for actor in self.actors:
            self._submit_video(actor)

    def results(self) -> Iterator[tuple[VideoSpec, VideoResult]]:
        """(spec, result) for every started video as workers finish them (in completion order). A worker that dies
        (killed, OOM, segfault) is replaced and its work tried once more on the fresh one."""
        if self.processor is not None:
            for spec in self.specs:
                yield spec, self.processor(spec)
            return
        ready: list[tuple[VideoSpec, VideoResult]] = []     # video results waiting for a model worker
        while self.pending or ready:
            videos_left = self.queue or any(kind == "video" for kind, *_ in self.pending.values())
            models_idle = not any(kind == "models" for kind, *_ in self.pending.values())
            # a full batch, or whatever is ready when a model worker would otherwise wait (or nothing more comes)
            if ready and (sum(len(r.records) for _, r in ready) >= self.cfg.models.batch_clips or models_idle
                          or not videos_left):
                self._submit_models(ready)
                ready = []
                continue
            done, _ = self.ray.wait(list(self.pending), num_returns=1)
            kind, actor, work = self.pending.pop(done[0])
            try:
                result = self.ray.get(done[0])
            except self.ray.exceptions.RayError as err:
                yield from self._replace(kind, actor, work, err)
                continue
            if kind == "video":
                self._submit_video(actor)
                if self.model_actors and any(r.ok for r in result.records):
                    ready.append((work, result))
                else:
                    yield work, result
            else:
                yield from zip([spec for spec, _ in work], result)

    def _submit_video(self, actor) -> None:
        if self.queue:
            spec = self.queue.pop()
            self.pending[actor.__call__.remote(spec)] = ("video", actor, spec)

    def _submit_models(self, batch: list[tuple[VideoSpec, VideoResult]], actor=None) -> None:
        """To `actor`, or to the least loaded model worker."""
        if actor is None:
            busy = [kind_actor[1] for kind_actor in self.pending.values() if kind_actor[0] == "models"]
            actor = min(self.model_actors, key=busy.count)
        self.pending[actor.finish.remote([result for _, result in batch])] = ("models", actor, batch)

    def _replace(self, kind: str, actor, work, err: Exception) -> Iterator[tuple[VideoSpec, VideoResult]]:
        """A dead worker's replacement gets its work once more; a second death is the videos' failure."""
        actors, cls, part = ((self.actors, self.video_cls, self.video_part) if kind == "video"
                             else (self.model_actors, self.model_cls, "models"))
        self.ray.kill(actor)
        actors.remove(actor)
        fresh = self._start(cls, part)
        actors.append(fresh)
        specs = [work] if kind == "video" else [spec for spec, _ in work]
        if not any(id(s) in self.retried for s in specs):
            self.retried.update(id(s) for s in specs)
            if kind == "video":
                self.queue.append(work)
                self._submit_video(fresh)
            else:
                self._submit_models(work, fresh)
            return
        if kind == "video":
            self._submit_video(fresh)
        yield from ((spec, VideoResult([_lost(spec, err)])) for spec in specs)

    def close(self, wait: bool = True) -> None:
        """End the actors, and a Ray this pool started; with wait=False Ray ends in the background (about a second,
        while the driver writes the shards and the report) and `wait_closed()` joins it."""
        for actor in self.actors + self.model_actors:
            self.ray.kill(actor)
        self.actors, self.model_actors = [], []
        if self.processor is None and self.owns_ray and self._ending is None:
            self._ending = threading.Thread(target=self.ray.shutdown)
            self._ending.start()
        if wait:
            self.wait_closed()

    def wait_closed(self) -> None:
        if self._ending is not None:
            self._ending.join()


def expected_work(spec: VideoSpec) -> float:
    """How much work a video is likely to be, for ordering (a queue pops from its end: the largest last here)."""
    if spec.end is not None:
        return spec.end - (spec.start or 0.0)
    try:
        return Path(spec.path).stat().st_size / 1e5     # ~ seconds of a typical face video; only the order matters
    except OSError:
        return 0.0


def _lost(spec: VideoSpec, err: Exception) -> ClipRecord:
    record = ClipRecord(spec=spec, workdir=Path("."))
    record.errors["worker"] = (f"the worker processing this video died twice: {type(err).__name__}: "
                               f"{str(err)[:300]}")
    return record
