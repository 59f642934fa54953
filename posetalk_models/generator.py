"""The video generator as one module: CoarseNet -> RefineNet -> enhancer, whichever stages a run has, and the run
folders they live in.

A run folder is self-contained: a refine run carries a copy of the CoarseNet it was trained over (coarse.safetensors
+ coarse.json), an enhance run copies of both (coarse.*, refine.*), next to its own step-*.safetensors. So any run
can be handed to generation or evaluation alone, and `load_cascade(RUN)` rebuilds every stage up to the run's own.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .coarsenet import CoarseNet, CoarseNetConfig
from .enhancer import Enhancer, EnhancerConfig
from .layers import to_unit
from .refinenet import RefineNet, RefineNetConfig
from .runs import copy_stage, load_model, require_checkpoint

STAGES = ("coarse", "refine", "enhance")
MODELS = {"coarse": (CoarseNet, CoarseNetConfig), "refine": (RefineNet, RefineNetConfig),
          "enhance": (Enhancer, EnhancerConfig)}


def build_stage(kind: str, sidecar: dict) -> nn.Module:
    model, config = MODELS[kind]
    return model(config(**sidecar["config"]["model"]))


class Cascade(nn.Module):
    """CoarseNet, then RefineNet and the enhancer when present; every stage's frame is returned."""

    def __init__(self, coarse: CoarseNet, refine: RefineNet | None = None, enhance: Enhancer | None = None):
        super().__init__()
        self.coarse, self.refine, self.enhance = coarse, refine, enhance

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


def load_cascade(run_dir: str | Path, device="cpu") -> tuple[Cascade, dict]:
    """(eval-mode cascade up to the run's own stage, the run's last checkpoint sidecar) from any generator run; a
    damaged checkpoint or sidecar is a runs.CheckpointError naming the file."""
    path, sidecar = require_checkpoint(run_dir, "coarse")
    run_dir = Path(path).parent        # a run folder, or one of its checkpoints
    kind = sidecar["kind"]      # read_sidecar made sure there is one
    if kind not in STAGES:
        raise ValueError(f"{path} is a checkpoint of a {kind} run ({path.with_suffix('.json').name} says so), not of "
                         "a video generator run (coarse, refine or enhance)")
    stages = {kind: load_model(path, sidecar, lambda s: build_stage(kind, s), device)}
    for name in STAGES[:STAGES.index(kind)]:
        if not (run_dir / f"{name}.safetensors").is_file():
            raise ValueError(f"{run_dir}: the copy of the {name} stage this run was trained over ({name}.safetensors) "
                             "is missing; the run folder is incomplete")
        stages[name], _ = copy_stage(run_dir, name, None, build=lambda s, n=name: build_stage(n, s), device=device)
    cascade = Cascade(stages["coarse"], stages.get("refine"), stages.get("enhance"))
    cascade.weight_files = [run_dir / f"{name}.safetensors" for name in STAGES[:STAGES.index(kind)]] + [Path(path)]
    return cascade.to(device).eval().requires_grad_(False), sidecar


def batch_inputs(batch: dict) -> tuple[torch.Tensor, ...]:
    """A frame batch with T targets per item -> (source, target, motion, speech, source_pose) flattened to b*T
    frames: the source repeated for each of its targets, images in [-1, 1]."""
    b, t = batch["target"].shape[:2]
    flat = lambda x: x.reshape(b * t, *x.shape[2:])   # noqa: E731
    source = to_unit(batch["source"])[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, *batch["source"].shape[1:])
    speech = flat(batch["speech"]) if "speech" in batch else None
    return (source, flat(to_unit(batch["target"])), flat(batch["motion"]), speech,
            batch["source_pose"][:, None].expand(-1, t, -1).reshape(b * t, -1))
