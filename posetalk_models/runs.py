"""Run folders: ONE registry of model kinds (KINDS: how to build each from its checkpoint sidecar, which frozen stages
its run folder carries) and ONE `load_run(path)` that every generator, evaluator and trainer uses to get a trained
model back. The checkpoint files themselves (safetensors + sidecar, resume checks) are posetalk_models.checkpoints.

A run folder is self-contained: a PLD run carries a copy of its VAE (vae.safetensors + vae.json), a refine run a copy
of its CoarseNet, an enhance run copies of both, next to its own step-*.safetensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from posetalk_models.checkpoints import copy_stage, load_model, require_checkpoint
from posetalk_models.nets.cascade import STAGES, Cascade, build_stage
from posetalk_models.nets.pld import PLDConfig, PoseLatentDiffusion
from posetalk_models.nets.syncnet import SyncExpert, SyncExpertConfig
from posetalk_models.nets.vae import PoseVAE, PoseVAEConfig


@dataclass(frozen=True)
class Kind:
    name: str                               # the sidecar's kind, and `posetalk-train NAME`
    build: Callable[[dict], nn.Module]      # sidecar -> the empty model its config describes
    frozen: tuple[str, ...] = ()            # the stages a run of this kind is trained over (copies in its folder)
    what: str = ""                          # for messages: what a run of this kind is


def _config_of(net, config) -> Callable[[dict], nn.Module]:
    return lambda sidecar: net(config(**sidecar["config"]["model"]))


KINDS = {k.name: k for k in [
    Kind("vae", _config_of(PoseVAE, PoseVAEConfig), what="pose VAE"),
    Kind("pld", _config_of(PoseLatentDiffusion, PLDConfig), frozen=("vae",), what="Pose Latent Diffusion model"),
    *(Kind(name, lambda s, n=name: build_stage(n, s), frozen=STAGES[:i], what=f"{name} video generator stage")
      for i, name in enumerate(STAGES)),
    Kind("sync", _config_of(SyncExpert, SyncExpertConfig), what="lip-sync expert"),
]}


@dataclass
class Run:
    """A trained run loaded back: its own model (eval mode, frozen), the frozen stages it carries, its sidecar."""
    folder: Path
    path: Path                              # the checkpoint loaded
    sidecar: dict
    model: nn.Module
    stages: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.sidecar["kind"]

    @property
    def weight_files(self) -> list[Path]:
        """Every weights file the run's models came from: the frozen copies, then its own checkpoint."""
        return [self.folder / f"{name}.safetensors" for name in self.stages] + [self.path]

    def cascade(self) -> Cascade:
        """A generator run's stages up to its own as one Cascade (eval mode)."""
        nets = {**self.stages, self.kind: self.model}
        cascade = Cascade(**nets)
        cascade.weight_files = self.weight_files
        return cascade.eval()


def load_run(run: str | Path, *, kinds: tuple[str, ...] | None = None, device="cpu", flag: str = "") -> Run:
    """The run folder's (or one checkpoint's) model and the frozen stages it carries. `kinds`: the kinds the caller
    can use (another is a ValueError naming both). A damaged checkpoint or sidecar is a CheckpointError naming the
    file; a run folder without the copy of a stage it was trained over is a ValueError."""
    wanted = kinds or tuple(KINDS)
    path, sidecar = require_checkpoint(run, wanted[0])
    folder, kind = Path(path).parent, sidecar["kind"]
    if kind not in wanted or kind not in KINDS:
        what = " or ".join(f"a {k} run" for k in wanted)
        raise ValueError(f"{f'{flag} ' if flag else ''}{path} is a checkpoint of a {kind} run "
                         f"({path.with_suffix('.json').name} says so), not {what}")
    model = load_model(path, sidecar, KINDS[kind].build, device).to(device).eval().requires_grad_(False)
    stages = {}
    for name in KINDS[kind].frozen:
        if not (folder / f"{name}.safetensors").is_file():
            raise ValueError(f"{folder}: the copy of the {name} stage this run was trained over ({name}.safetensors) "
                             "is missing; the run folder is incomplete")
        stages[name], _ = copy_stage(folder, name, None, build=KINDS[name].build, device=device)
    return Run(folder, Path(path), sidecar, model, stages)


def load_cascade(run: str | Path, device="cpu", flag: str = "") -> tuple[Cascade, dict]:
    """(eval-mode cascade up to the run's own stage, the run's last checkpoint sidecar) of any generator run."""
    loaded = load_run(run, kinds=STAGES, device=device, flag=flag)
    return loaded.cascade().to(device), loaded.sidecar
