"""Runs the pipeline's VideoProcessor in a pool of Ray actors (ray_start.py gets the build its Ray).

Each actor loads the models once (setup) and processes whole videos. The driver keeps a bounded number of videos in
flight and learns of each only a small summary: the clips themselves go from the video worker to a model worker,
and on to the writer that writes their shard group, by object reference (Ray moves them between nodes), so no media
passes through the driver and no node reads another's disk. `workers=0` runs everything in this process
(debugging, profiling).

The pool starts its video actors, and has them load their models, as soon as it is made, and hands out the videos
at once. The model actors start with the first clips for them: loading the speech and text models (torch,
transformers: seconds of CPU) would otherwise hold back the first videos on a small machine. The driver takes those
models' versions from a model worker, which has loaded them anyway, rather than loading them a second time itself,
and checks them before the first shard is written. A shard group is written by a writer actor on the node that made
most of its clips, one per node, started with the first finished video: the writer's imports (webdataset pulls in
torch, 1.5 s) are done while the videos run, not after the last of them.
"""
from __future__ import annotations

import importlib
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .config import PipelineConfig
from .pipeline import VideoProcessor, VideoResult, VideoSummary, part_of, worker_resources
from .ray_start import ensure_ray, owned
from .schema import ClipRecord, VideoSpec
from .shards import Group

Writer = Callable[[Group, list[VideoResult]], dict]     # writes a group's shard, returns its record


class RayVideoProcessor(VideoProcessor):
    def video(self, spec: VideoSpec) -> tuple[VideoSummary, VideoResult]:
        """(summary for the driver, result for the next worker): called with num_returns=2."""
        result = self(spec)
        return result.summary(), result

    def models(self, *results: VideoResult) -> tuple:
        """The model stages on several videos' results: (their summaries, one result per video), num_returns=N+1."""
        done = self.finish(list(results))
        return ([r.summary() for r in done], *done)

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def resources(self) -> dict[str, float]:
        """What Ray gave this worker (CPU, GPU shares)."""
        import ray

        return ray.get_runtime_context().get_assigned_resources()


class ShardWriter:
    """Writes shard groups on its node (a Ray actor reserving no CPU: it mostly waits on its disk or store)."""

    def __init__(self, options: dict):
        from . import storage

        storage.configure(options)

    def warm(self) -> None:
        importlib.import_module("webdataset")    # what writing a shard imports, loaded ahead of the first group

    def write(self, write: Writer, group: Group, *results: VideoResult) -> dict:
        return write(group, list(results))


class WorkerPool:
    """`workers` video actors (at most one per video), and, with `models.pool`, `models.workers` model actors that
    run the speech, text and encode stages on clips of several videos at once; or, with workers=0, this process.
    Every actor loads its models from the start. `start(specs)` hands the videos out, `results()` yields (spec,
    result) as videos finish; `close()` ends the actors."""

    def __init__(self, cfg: PipelineConfig, *, workers: int, address: str | None = None,
                 videos: int | None = None, processor: VideoProcessor | None = None):
        self.cfg, self.processor, self.actors, self.model_actors = cfg, None, [], []
        self.node_refs: dict = {}           # actor -> reference to its Ray node id
        self.setup_refs: list = []          # the video actors' model setups
        self.writers: dict = {}             # node id -> its ShardWriter
        self.versions_ref = None
        self.plan = processor or VideoProcessor(cfg)    # the driver's stages: worker sizes and versions
        self._ending: threading.Thread | None = None
        if workers == 0:
            self.processor = self.plan                  # ... or the in-process run itself
            return
        import ray

        self.owns_ray = owned.is_set() or not ray.is_initialized()   # a Ray ray_start starts, the pool ends
        self.ray = ensure_ray(address, None)
        self.video_part = part = "video" if cfg.models.pool else "all"
        need = worker_resources(part_of(self.plan.stages, part))
        self.video_cls = self.ray.remote(RayVideoProcessor).options(num_cpus=need.cpus, num_gpus=need.gpus,
                                                                    scheduling_strategy="SPREAD")
        self.actors = [self._start(self.video_cls, part) for _ in range(max(1, min(workers, videos or workers)))]
        if cfg.models.pool:     # its actors start with the first clips for them (model_workers)
            self.model_cls = self.ray.remote(RayVideoProcessor).options(num_cpus=cfg.models.cpus,
                                                                        num_gpus=cfg.models.gpus)
        # no CPU reserved: the video actors hold every core for the build, and a writer mostly waits on its store
        self.writer_cls = self.ray.remote(ShardWriter)

    def _start(self, cls, part: str):
        actor = cls.remote(self.cfg, part)
        setup = actor.setup.remote()    # the models load now, while the driver gets on with its part
        if part != "models":
            self.setup_refs.append(setup)
        if part == "models" and self.versions_ref is None:  # asked now: answered with the models loaded, before
            self.versions_ref = actor.versions.remote()     # any clip of theirs
        self.node_refs[actor] = actor.node_id.remote()   # asked now: an actor answers in order, before any work
        return actor

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the video workers have set up their models (or failed to, or `timeout` s passed)."""
        try:
            if self.setup_refs:
                self.ray.wait(self.setup_refs, num_returns=len(self.setup_refs), timeout=timeout)
        except Exception:       # the pool closed meanwhile (a build that ended early): nothing to wait for
            pass

    def model_workers(self) -> list:
        """The model actors, started on first use (the first clips for them, or the versions check)."""
        if not self.model_actors:
            self.model_actors = [self._start(self.model_cls, "models") for _ in range(self.cfg.models.workers)]
        return self.model_actors

    def versions(self) -> dict[str, str]:
        """The stages' versions: the video stages' from this process (no model of theirs is loaded for it), the
        model stages' from a model worker, which has loaded the models anyway (without a model pool, or in-process,
        this process loads them)."""
        if self.processor is not None or not self.cfg.models.pool:
            return self.plan.versions()
        self.model_workers()
        try:
            models = self.ray.get(self.versions_ref)
        except self.ray.exceptions.RayError:      # that worker died (and was replaced): ask a live one
            self.versions_ref = self.model_actors[0].versions.remote()
            models = self.ray.get(self.versions_ref)
        return {**self.plan.versions("video"), **models}

    def nodes(self) -> list[str]:
        """The Ray node id of each video worker started ([] in-process; a worker already dead is left out)."""
        return [node for node in map(self._node, self.actors) if node is not None]

    def _node(self, actor) -> str | None:
        """The Ray node an actor runs on (None: the driver's own results, or a worker that died first)."""
        try:
            return self.ray.get(self.node_refs[actor]) if actor in self.node_refs else None
        except self.ray.exceptions.RayError:
            return None

    def _writer(self, node: str | None):
        """The shard writer on `node` (None: the driver's), started and warmed on first use."""
        node = node or self.ray.get_runtime_context().get_node_id()
        if node not in self.writers:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            place = NodeAffinitySchedulingStrategy(node, soft=True)     # that node, or any if it is gone
            writer = self.writer_cls.options(num_cpus=0, scheduling_strategy=place)
            self.writers[node] = writer.remote(self.cfg.storage.options)
            self.writers[node].warm.remote()
        return self.writers[node]

    def start(self, groups: Iterable[Group], write: Writer, before_writing: Callable[[], None] = lambda: None
              ) -> None:
        """Hand the groups' videos to the workers now: group by group (a group's clips wait in the object store until
        its last video is done, so few groups are open at once), the longest video of a group first (no worker is
        left with a long video while the others idle). `write(group, results)` runs where a group finishes;
        `before_writing()` runs here once, before the first group is written (it may raise to stop the build)."""
        self.groups, self.write, self.before_writing = list(groups), write, before_writing
        if self.processor is not None:
            return
        self.group_of = {id(spec): group for group in self.groups for spec in group.specs}
        self.left = {group.index: len(group.specs) for group in self.groups}
        self.final: dict[int, object] = {}                  # id(spec) -> reference to its finished result
        self.queue = sorted((s for g in self.groups for s in g.specs),
                            key=lambda spec: (-self.group_of[id(spec)].index, expected_work(spec)))
        self.pending, self.retried = {}, set()
        for actor in self.actors:
            self._submit_video(actor)

    def results(self) -> Iterator[tuple[str, tuple]]:
        """Events as the work finishes: ("video", (spec, VideoSummary)) per video, ("group", (group, record)) per
        shard group written. A worker that dies (killed, OOM, segfault) is replaced and its work tried once more on
        the fresh one."""
        if self.processor is not None:
            for group in self.groups:
                results = []
                for spec in group.specs:
                    results.append(self.processor(spec))
                    yield "video", (spec, results[-1].summary())
                self._first_write()
                yield "group", (group, self.write(group, results))
            return
        ready: list[tuple] = []     # (spec, result reference, summary) waiting for a model worker
        while self.pending or ready:
            videos_left = self.queue or any(kind == "video" for kind, *_ in self.pending.values())
            models_idle = not any(kind == "models" for kind, *_ in self.pending.values())
            # a full batch, or whatever is ready when a model worker would otherwise wait (or nothing more comes)
            if ready and (sum(s.kept for *_, s in ready) >= self.cfg.models.batch_clips or models_idle
                          or not videos_left):
                self._submit_models(ready)
                ready = []
                continue
            done, _ = self.ray.wait(list(self.pending), num_returns=1)
            kind, actor, work = self.pending.pop(done[0])
            try:
                answer = self.ray.get(done[0])      # a summary, or a group's record: never media
            except self.ray.exceptions.RayError as err:
                yield from self._replace(kind, actor, work, err)
                continue
            if kind != "write":
                self._writer(self._node(actor))     # a writer where results are, started while the videos run
            if kind == "video":
                self._submit_video(actor)
                spec, ref = work
                if self.cfg.models.pool and answer.kept:
                    ready.append((spec, ref, answer))
                else:
                    yield from self._finished(spec, ref, answer, actor)
            elif kind == "models":
                batch, refs = work
                for (spec, *_), ref, summary in zip(batch, refs, answer):
                    yield from self._finished(spec, ref, summary, actor)
            else:
                yield "group", (work[0], answer)

    def _finished(self, spec: VideoSpec, ref, summary: VideoSummary, actor=None) -> Iterator[tuple[str, tuple]]:
        """A video done (its result made by `actor`; None: here); the last of its group sends the group's results to
        the writer on the node that made most of them."""
        yield "video", (spec, summary)
        group = self.group_of[id(spec)]
        self.final[id(spec)] = ref, self._node(actor)
        self.left[group.index] -= 1
        if not self.left[group.index]:
            refs, nodes = zip(*(self.final.pop(id(s)) for s in group.specs))
            self._submit_write(group, list(refs), Counter(nodes).most_common(1)[0][0])

    def _first_write(self) -> None:
        if self.before_writing is not None:
            self.before_writing, check = None, self.before_writing
            check()

    def _submit_write(self, group: Group, refs: list, node: str | None) -> None:
        self._first_write()
        writer = self._writer(node)
        task = writer.write.remote(self.write, group, *refs)
        self.pending[task] = ("write", writer, (group, refs, node))

    def _submit_video(self, actor) -> None:
        if self.queue:
            spec = self.queue.pop()
            summary, result = actor.video.options(num_returns=2).remote(spec)
            self.pending[summary] = ("video", actor, (spec, result))

    def _submit_models(self, batch: list[tuple], actor=None) -> None:
        """To `actor`, or to the least loaded model worker."""
        if actor is None:
            busy = [kind_actor[1] for kind_actor in self.pending.values() if kind_actor[0] == "models"]
            actor = min(self.model_workers(), key=busy.count)
        summaries, *results = actor.models.options(num_returns=len(batch) + 1).remote(*[r for _, r, _ in batch])
        self.pending[summaries] = ("models", actor, (batch, results))

    def _replace(self, kind: str, actor, work, err: Exception) -> Iterator[tuple[str, tuple]]:
        """A dead worker's replacement gets its work once more; a second death is the videos' failure. A writer
        that fails twice (its store refused the shard) ends the build."""
        if kind == "write":
            group, refs, node = work
            if ("write", group.index) in self.retried:
                raise RuntimeError(f"writing shard group {group.index} failed twice: "
                                   f"{getattr(err, 'cause', None) or err}") from None
            self.retried.add(("write", group.index))
            self.ray.kill(actor)            # dead, or its store failed it: a fresh writer tries once more
            self.writers = {n: w for n, w in self.writers.items() if w != actor}
            self._submit_write(group, refs, node)
            return
        actors, cls, part = ((self.actors, self.video_cls, self.video_part) if kind == "video"
                             else (self.model_actors, self.model_cls, "models"))
        self.ray.kill(actor)
        actors.remove(actor)
        fresh = self._start(cls, part)
        actors.append(fresh)
        batch = [work[0]] if kind == "video" else [spec for spec, *_ in work[0]]
        if not any(id(s) in self.retried for s in batch):
            self.retried.update(id(s) for s in batch)
            if kind == "video":
                self.queue.append(work[0])
                self._submit_video(fresh)
            else:
                self._submit_models(work[0], fresh)
            return
        if kind == "video":
            self._submit_video(fresh)
        for spec in batch:
            lost = VideoResult([_lost(spec, err)])
            yield from self._finished(spec, self.ray.put(lost), lost.summary())

    def close(self, wait: bool = True) -> None:
        """End the actors, and a Ray this pool started; with wait=False Ray ends in the background (about a second,
        while the driver writes the shards and the report) and `wait_closed()` joins it."""
        for actor in self.actors + self.model_actors + list(self.writers.values()):
            self.ray.kill(actor)
        self.actors, self.model_actors, self.writers = [], [], {}
        if self.processor is None and self.owns_ray and self._ending is None:
            owned.clear()
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
