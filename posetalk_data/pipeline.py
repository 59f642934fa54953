"""The extraction pipeline, top to bottom: which stages run on each input video, in order.

All stages of one video run in the same worker, so a clip's intermediate files stay on that worker's disk.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from . import storage
from .config import PipelineConfig
from .schema import VIDEO_FPS, ClipRecord, Member, VideoSpec
from .stages.base import Resources, Stage
from .stages.encode import EncodeStage
from .stages.facetrack import FaceTrackStage
from .stages.features import SpeechStage, TextStage
from .stages.headpose import HeadPoseStage
from .stages.landmarks import LandmarksStage
from .stages.normalise import NormaliseStage
from .stages.pack import PackStage
from .stages.probe import ProbeStage
from .stages.quality import QualityStage
from .stages.sync import SyncStage


STAGES: tuple[type[Stage], ...] = (
    ProbeStage,           # 1:1  ffprobe: streams, duration, fps, rotation
    NormaliseStage,       # 1:1  16 kHz mono audio; video is 25 fps on read
    FaceTrackStage,       # 1:N  one clip per face-continuous span in a shot: crop + mesh
    LandmarksStage,       # 1:1  the mesh checked and gap-filled (+ FAN 68 if chosen)
    HeadPoseStage,        # 1:1  yaw/pitch/roll, centre, scale; gaze
    SyncStage,            # 1:1  the clip's audio, its offset to the lips corrected
    PackStage,            # 1:1  crop bytes and FLAC as data
    QualityStage,         # 1:1  figures and flags
    # the model stages: in the model workers' pool when there is one (no file of the video worker needed)
    SpeechStage,          # 1:1  speech features, T rows (mel / wav2vec 2.0 / HuBERT)
    TextStage,            # 1:1  prompts (captions or from the pose) + embeddings
    EncodeStage,          # 1:1  the members the stages above declare, as bytes; meta.json
)
# The sample's members whatever the config, in stage order: the schema (the feature layers, named after their
# model, come on top: VideoProcessor.members).
MEMBERS: dict[str, Member] = {m.name: m for stage in STAGES for m in stage.members}
# member -> the manifest "versions" entries that determine its bytes (a feature layer's are under its own name)
LAYER_VERSIONS: dict[str, tuple[str, ...]] = {name: m.versions for name, m in MEMBERS.items() if m.versions}


def build_stages(cfg: PipelineConfig) -> list[Stage]:
    stages: list[Stage] = []
    for stage in STAGES:
        stages.append(stage.from_config(cfg, stages))
    return stages


MODEL_STAGES = ("speech", "text", "encode")


def part_of(stages: list[Stage], part: str) -> list[Stage]:
    """The stages of a part: "all", "video" (all but the model stages) or "models" (the model stages alone)."""
    return stages if part == "all" else [s for s in stages if (s.name in MODEL_STAGES) == (part == "models")]


def check_wiring(stages: list[Stage]) -> None:
    """Every stage's inputs must be produced by an earlier stage (a programming error otherwise)."""
    have: set[str] = set()
    for stage in stages:
        missing = set(stage.inputs()) - have
        if missing:
            raise ValueError(f"stage {stage.name} needs {sorted(missing)}, which no earlier stage produces")
        have |= set(stage.outputs())


def worker_resources(stages: list[Stage]) -> Resources:
    """Stages run one after another in a worker, so it needs the largest of their demands."""
    return Resources(cpus=max(s.resources.cpus for s in stages), gpus=max(s.resources.gpus for s in stages))


def describe(stages: list[Stage]) -> Table:
    table = Table(title="pipeline", show_lines=False)
    for column in ("#", "stage", "reads", "writes", "cpus", "gpus"):
        table.add_column(column)
    for i, s in enumerate(stages, 1):
        table.add_row(str(i), s.name, ", ".join(s.inputs()), ", ".join(s.outputs()),
                      f"{s.resources.cpus:g}", f"{s.resources.gpus:g}")
    return table


@dataclass
class VideoResult:
    records: list[ClipRecord]
    seconds: dict[str, float] = field(default_factory=dict)   # stage name -> seconds spent on this video
    began: dict[str, float] = field(default_factory=dict)     # stage name -> when it began on this video (time.time)

    def summary(self) -> "VideoSummary":
        return VideoSummary([{"ok": r.ok, "unit": r.meta.get("unit"), "frames": round((r.end - r.start) * VIDEO_FPS),
                              "error": None if r.ok else ": ".join(next(iter(r.errors.items())))}
                             for r in self.records], dict(self.seconds), dict(self.began))


@dataclass
class VideoSummary:
    """What the driver learns of a finished video: per clip kept or why not, and the stages' time; no media (the
    records themselves go from worker to worker, and to the task writing the shard, by object reference)."""
    clips: list[dict]
    seconds: dict[str, float]
    began: dict[str, float] = field(default_factory=dict)   # wall clock: the build's start-up is measured with it

    @property
    def kept(self) -> int:
        return sum(c["ok"] for c in self.clips)


def fetch_source(spec: VideoSpec, workdir: Path) -> VideoSpec:
    """A video in an object store, downloaded into the worker's own temp folder (ffmpeg reads files; no node reads
    another's disk), with the paired .wav beside it when the store has one, and its separate audio file when the
    source names one (celebv-text's <clip>.m4a). A local path is read where it is."""
    if storage.is_url(spec.audio_path or ""):
        audio = storage.download(spec.audio_path, workdir / storage.name(spec.audio_path))   # its name is recorded
        spec = dataclasses.replace(spec, audio_path=str(audio))
    if not storage.is_url(spec.path):
        return spec
    local = storage.download(spec.path, workdir / storage.name(spec.path))
    wav = spec.path.rsplit(".", 1)[0] + ".wav"
    if wav != spec.path and storage.is_file(wav):
        storage.download(wav, local.with_suffix(".wav"))
    return dataclasses.replace(spec, path=str(local))


class VideoProcessor:
    """Runs the stages on one input video; used in-process or inside a Ray actor (posetalk_data.runner).

    part "all": every stage; "video": all but the model stages, whose records keep their arrays for them; "models":
    the model stages alone, on records from a "video" processor (`finish`)."""

    def __init__(self, cfg: PipelineConfig, part: str = "all"):
        self.part = part
        storage.configure(cfg.storage.options)     # the same store settings in every worker as in the driver
        self.stages = part_of(build_stages(cfg), part)
        self._ready = False

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()
        self._ready = True

    def members(self) -> dict[str, str]:
        """The members this pipeline's samples hold, with what they hold (part "all")."""
        return {m.name: m.description for stage in self.stages for m in stage.writes()}

    def versions(self, part: str = "all") -> dict[str, str]:
        """The versions of this processor's stages (of `part` of them)."""
        out: dict[str, str] = {}
        for stage in part_of(self.stages, part):
            out.update(stage.versions())
        return out

    def __call__(self, spec: VideoSpec) -> VideoResult:
        if not self._ready:
            self.setup()
        workdir = Path(tempfile.mkdtemp(prefix="posetalk_"))
        try:
            try:
                readable = fetch_source(spec, workdir)
            except OSError as err:
                record = ClipRecord(spec=spec, workdir=workdir)
                record.errors["probe"] = f"cannot read the video from {spec.path}: {type(err).__name__}: {err}"
                return VideoResult([record])
            result = self._run(VideoResult([ClipRecord(spec=readable, workdir=workdir)]))
            for r in result.records:   # no file of this worker is needed after the pack stage
                r.video = r.audio = r.audio_plan = None
                r.spec = spec          # the source as the build knows it (its URL), not the download
            return result
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def finish(self, results: list[VideoResult]) -> list[VideoResult]:
        """The model stages on clips of several videos at once (part "models")."""
        if not self._ready:
            self.setup()
        return [self._run(result) for result in results]

    def _run(self, result: VideoResult) -> VideoResult:
        for stage in self.stages:
            result.began.setdefault(stage.name, time.time())
            started = time.perf_counter()
            result.records = stage.process_batch(result.records)
            result.seconds[stage.name] = result.seconds.get(stage.name, 0.0) + time.perf_counter() - started
        if self.part != "video":
            for r in result.records:   # drop what only the workers need; members/meta travel back
                r.arrays.clear()
        return result
