"""Generation as a library: `talk` is the ONE complete path from a portrait, speech features and a head-pose drive to
the frames of a talking-head video. posetalk-generate and posetalk-eval both call it, so the stage choice and the
"--enhance needs an enhance run" check are written once (Cascade.output_stage)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from posetalk_data import storage
from posetalk_models.generate.render import render, source_tensor
from posetalk_models.nets.cascade import Cascade
from posetalk_models.runs import load_cascade


@dataclass
class Generator:
    """A video generator run loaded once: its cascade (every stage up to the run's own) and sidecar."""
    run: str | Path                 # as given: a path, or a store URL (a Path would turn s3://b into s3:/b)
    cascade: Cascade
    sidecar: dict

    @property
    def size(self) -> int:
        return self.cascade.size

    @property
    def windows(self) -> tuple[int, int]:
        """The motion and speech rows around each frame the stages were trained with."""
        data = self.sidecar["config"]["data"]
        return data["motion_window"], data["audio_window"]

    @property
    def speech(self) -> str | None:
        """The speech features the run was trained on (None: it reads none)."""
        return self.sidecar["config"]["data"].get("speech")


def load_generator(run: str | Path, device="cpu", flag: str = "--generator") -> Generator:
    cascade, sidecar = load_cascade(run, device=device, flag=flag)
    return Generator(storage.location(run), cascade, sidecar)


@dataclass
class Video:
    frames: np.ndarray          # (n, S, S, 3) uint8 at the generator's size
    stage: str                  # the stage whose frames these are


def talk(portrait: np.ndarray, source_pose: np.ndarray, motion: np.ndarray, speech: np.ndarray | None,
         generator: Generator, *, enhance: bool = False, progress: Callable[[int], None] | None = None) -> Video:
    """The frames of the portrait (an (H, W, 3) uint8 face crop; source_pose its (7,) angles) driven by `motion`
    ((n, 10) crop-space pose, gaze and movement per frame: drive.fixed / reference / generated, or a clip's own)
    and `speech` ((n, D) features of the kind the run was trained on, or None for a run without speech).
    enhance: the enhancer's frames (an enhance run only, else ValueError)."""
    stage = generator.cascade.output_stage(enhance, generator.run)
    frames = render(generator.cascade, source_tensor(portrait, generator.size), source_pose, motion, speech,
                    windows=generator.windows, stage=stage, progress=progress)
    return Video(frames, stage)
