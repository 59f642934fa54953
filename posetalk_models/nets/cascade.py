"""The video generator's cascade: CoarseNet -> RefineNet -> enhancer, as ONE list of stages (CASCADE). A new stage
joins by one line here (its net, config and how it reads the frame before it) plus its trainer file
(posetalk_models/train/<stage>.py); how a run folder of any stage is loaded is posetalk_models.runs.load_run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from posetalk_models.nets.coarsenet import CoarseNet, CoarseNetConfig
from posetalk_models.nets.enhancer import Enhancer, EnhancerConfig
from posetalk_models.nets.layers import to_unit
from posetalk_models.nets.refinenet import RefineNet, RefineNetConfig


@dataclass
class StageInputs:
    """What every stage may read besides the frame before it: source (b, 3, S, S) in [-1, 1], motion (b, W, 10),
    source_pose (b, 7), speech (b, A, D) or None."""
    source: torch.Tensor
    motion: torch.Tensor
    source_pose: torch.Tensor
    speech: torch.Tensor | None


def _animate(net: nn.Module, before: torch.Tensor, x: StageInputs) -> torch.Tensor:
    """CoarseNet and RefineNet: the frame before (the source for the first stage) moved to the driving motion."""
    return net(before, x.motion, x.source_pose, x.speech)["image"]


def _enhance(net: nn.Module, before: torch.Tensor, x: StageInputs) -> torch.Tensor:
    """The enhancer: the frame before, sharpened with the source frame's detail."""
    return net(before, x.source)


@dataclass(frozen=True)
class Stage:
    name: str           # the model kind of its runs (posetalk-train NAME), the Cascade attribute, its copy's name
    net: type[nn.Module]
    config: type
    apply: Callable[[nn.Module, torch.Tensor, StageInputs], torch.Tensor]   # (net, frame before, inputs) -> frame
    on_request: bool = False    # its frames are the video only when asked for (--enhance); else the stage before's


CASCADE = [
    Stage("coarse", CoarseNet, CoarseNetConfig, _animate),
    Stage("refine", RefineNet, RefineNetConfig, _animate),
    Stage("enhance", Enhancer, EnhancerConfig, _enhance, on_request=True),
]
STAGES = tuple(s.name for s in CASCADE)
MODELS = {s.name: (s.net, s.config) for s in CASCADE}
BY_NAME = {s.name: s for s in CASCADE}


def build_stage(kind: str, sidecar: dict) -> nn.Module:
    """The empty net of stage `kind` as a checkpoint sidecar's model config describes it."""
    model, config = MODELS[kind]
    return model(config(**sidecar["config"]["model"]))


class Cascade(nn.Module):
    """The stages of CASCADE a run has, in order, given by name (each an attribute by its name, so a run's weights
    keep their keys; absent ones are None); every stage's frame is returned. A stage reads the frame of the one
    before it (the first one: the source frame) and the StageInputs."""

    def __init__(self, **stages: nn.Module | None):
        super().__init__()
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown cascade stage(s) {', '.join(sorted(unknown))}; the stages are "
                             f"{', '.join(STAGES)}")
        present = [name for name in STAGES if stages.get(name) is not None]
        if present != list(STAGES[:len(present)]) or not present:
            raise ValueError(f"a cascade holds its stages from the first without gaps ({' -> '.join(STAGES)}); "
                             f"given: {', '.join(present) or 'none'}")
        for name in STAGES:
            setattr(self, name, stages.get(name))

    @property
    def present(self) -> list[str]:
        return [name for name in STAGES if getattr(self, name) is not None]

    @property
    def last(self) -> str:
        """The last stage present: the one a generator run was trained as."""
        return self.present[-1]

    def output_stage(self, enhance: bool, generator="") -> str:
        """The stage whose frames are the video: the enhancer's when asked for (an enhance run only), else the last
        stage present that is not on request (refine, or coarse for a CoarseNet run)."""
        if enhance and self.enhance is None:
            raise ValueError(f"--enhance needs an enhance run; {generator} is a {self.last} run")
        return "enhance" if enhance else [n for n in self.present if not BY_NAME[n].on_request][-1]

    @property
    def size(self) -> int:
        return self.coarse.cfg.size

    def forward(self, source: torch.Tensor, motion: torch.Tensor, source_pose: torch.Tensor,
                speech: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """source (b, 3, S, S) in [-1, 1], motion (b, W, 10), source_pose (b, 7), speech (b, A, D) ->
        {"coarse": ..., "refine": ..., "enhance": ...} frames in [-1, 1] for the stages present."""
        x, frame, out = StageInputs(source, motion, source_pose, speech), source, {}
        for name in self.present:
            frame = out[name] = BY_NAME[name].apply(getattr(self, name), frame, x)
        return out


def batch_inputs(batch: dict) -> tuple[torch.Tensor, ...]:
    """A frame batch with T targets per item -> (source, target, motion, speech, source_pose) flattened to b*T
    frames: the source repeated for each of its targets, images in [-1, 1]."""
    b, t = batch["target"].shape[:2]
    flat = lambda x: x.reshape(b * t, *x.shape[2:])   # noqa: E731
    source = to_unit(batch["source"])[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, *batch["source"].shape[1:])
    speech = flat(batch["speech"]) if "speech" in batch else None
    return (source, flat(to_unit(batch["target"])), flat(batch["motion"]), speech,
            batch["source_pose"][:, None].expand(-1, t, -1).reshape(b * t, -1))
