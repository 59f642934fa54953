"""The video generator's cascade: CoarseNet -> RefineNet -> enhancer, as ONE list of stages (CASCADE). A new stage
joins by one line here (its net and config) plus its trainer file (posetalk_models/train/); how a run folder of any
stage is loaded is posetalk_models.runs.load_run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from posetalk_models.nets.coarsenet import CoarseNet, CoarseNetConfig
from posetalk_models.nets.enhancer import Enhancer, EnhancerConfig
from posetalk_models.nets.layers import to_unit
from posetalk_models.nets.refinenet import RefineNet, RefineNetConfig


@dataclass(frozen=True)
class Stage:
    name: str           # the model kind of its runs (posetalk-train NAME) and the name of its copy in later runs
    net: type[nn.Module]
    config: type


CASCADE = [Stage("coarse", CoarseNet, CoarseNetConfig), Stage("refine", RefineNet, RefineNetConfig),
           Stage("enhance", Enhancer, EnhancerConfig)]
STAGES = tuple(s.name for s in CASCADE)
MODELS = {s.name: (s.net, s.config) for s in CASCADE}


def build_stage(kind: str, sidecar: dict) -> nn.Module:
    """The empty net of stage `kind` as a checkpoint sidecar's model config describes it."""
    model, config = MODELS[kind]
    return model(config(**sidecar["config"]["model"]))


class Cascade(nn.Module):
    """The stages of CASCADE a run has, in order (each an attribute by its name; absent ones are None); every
    stage's frame is returned. A later stage reads the frame of the one before it and the source frame."""

    def __init__(self, coarse: CoarseNet, refine: RefineNet | None = None, enhance: Enhancer | None = None):
        super().__init__()
        self.coarse, self.refine, self.enhance = coarse, refine, enhance

    @property
    def last(self) -> str:
        """The last stage present: the one a generator run was trained as."""
        return [name for name in STAGES if getattr(self, name) is not None][-1]

    def output_stage(self, enhance: bool, generator="") -> str:
        """The stage whose frames are the video: the enhancer's when asked for (an enhance run only), else the last
        stage before it (refine, or coarse for a CoarseNet run)."""
        if enhance and self.enhance is None:
            raise ValueError(f"--enhance needs an enhance run; {generator} is a {self.last} run")
        return "enhance" if enhance else "refine" if self.refine is not None else "coarse"

    @property
    def size(self) -> int:
        return self.coarse.cfg.size

    def forward(self, source: torch.Tensor, motion: torch.Tensor, source_pose: torch.Tensor,
                speech: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """source (b, 3, S, S) in [-1, 1], motion (b, W, 10), source_pose (b, 7), speech (b, A, D) ->
        {"coarse": ..., "refine": ..., "enhance": ...} frames in [-1, 1] for the stages present."""
        out = {"coarse": self.coarse(source, motion, source_pose, speech)["image"]}
        if self.refine is not None:
            out["refine"] = self.refine(out["coarse"], motion, source_pose, speech)["image"]
        if self.enhance is not None:
            out["enhance"] = self.enhance(out["refine"], source)
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
