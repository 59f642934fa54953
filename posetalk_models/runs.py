"""Run folders: ONE registry of model kinds (KINDS: how to build each from its checkpoint sidecar, which frozen stages
its run folder carries) and ONE `load_run(path)` that every generator, evaluator and trainer uses to get a trained
model back. The checkpoint files themselves (safetensors + sidecar, resume checks) are posetalk_models.checkpoints.

A run folder is self-contained: a PLD run carries a copy of its VAE (vae.safetensors + vae.json), a refine run a copy
of its CoarseNet, an enhance run copies of both, next to its own step-*.safetensors. A run in a store (s3://, gs://)
is read from a local copy of the files a load needs (`fetched`); runs are trained and resumed on a local disk only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from posetalk_data import storage
from posetalk_models.checkpoints import copy_stage, load_model, require_checkpoint
from posetalk_models.run_paths import is_checkpoint, run_folder
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


def cache_root() -> Path:
    """Where runs read from a store are kept: $POSETALK_CACHE, else $XDG_CACHE_HOME/posetalk (~/.cache/posetalk)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "posetalk"
    return Path(os.environ.get("POSETALK_CACHE") or default)


def _fetch(folder: str, name: str, dest: Path) -> None:
    """folder/name into dest/name unless it is there: downloaded under a temporary name and renamed, so an
    interrupted download leaves no half file for the next load to trust."""
    target = dest / name
    if target.is_file():
        return
    part = dest / f".{name}.{os.getpid()}.part"
    try:
        storage.download(storage.join(folder, name), part)
    except FileNotFoundError:
        raise FileNotFoundError(f"{storage.join(folder, name)}: no such file in the store") from None
    os.replace(part, target)


def fetched(run: str | Path) -> str | Path:
    """A run named by a store URL (its folder or one step-N.safetensors) as a local folder load_run reads: that
    checkpoint (the folder's newest when none is named) with its sidecar, and the copies of the frozen stages its
    kind is trained over, kept in cache_root()/runs under a key of the checkpoint's URL, size and ETag (a replaced
    checkpoint is fetched anew; an unchanged one is not fetched twice). A local run is returned as it is."""
    if not storage.is_url(run):
        return run
    url, folder = str(run).rstrip("/"), str(run_folder(run)).rstrip("/")
    names = None if url.endswith(".safetensors") else storage.listdir(folder)
    checkpoint = storage.name(url) if names is None else max((n for n in names if is_checkpoint(n)), default=None)
    if checkpoint is None:
        raise FileNotFoundError(f"{url}: no step-*.safetensors checkpoint there (name a run folder in the store "
                                "or one of its checkpoints)")
    try:
        signature = storage.signature(storage.join(folder, checkpoint))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such checkpoint in the store") from None
    dest = cache_root() / "runs" / hashlib.sha256(repr(signature).encode()).hexdigest()[:24]
    dest.mkdir(parents=True, exist_ok=True)
    sidecar = checkpoint.removesuffix(".safetensors") + ".json"
    _fetch(folder, sidecar, dest)
    try:
        kind = KINDS.get(json.loads((dest / sidecar).read_text()).get("kind"))
    except (ValueError, AttributeError):
        kind = None                 # a damaged sidecar: load_run names it
    present = set(storage.listdir(folder) if names is None else names)
    for stage in kind.frozen if kind else ():
        for name in (f"{stage}.safetensors", f"{stage}.json"):
            if name in present:     # a missing copy: load_run says the run folder is incomplete
                _fetch(folder, name, dest)
    _fetch(folder, checkpoint, dest)
    return dest


@contextlib.contextmanager
def _named_as(local: Path, folder_url: str):
    """Errors about a fetched run's local copy name the store's files instead (what the user gave)."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        if str(local) not in str(err):
            raise
        try:
            renamed = type(err)(str(err).replace(str(local), folder_url))
        except Exception:           # an error type built otherwise (pydantic's): as it was
            raise err from None
        raise renamed from err


def load_run(run: str | Path, *, kinds: tuple[str, ...] | None = None, device="cpu", flag: str = "") -> Run:
    """The run folder's (or one checkpoint's) model and the frozen stages it carries. `kinds`: the kinds the caller
    can use (another is a ValueError naming both). A damaged checkpoint or sidecar is a CheckpointError naming the
    file; a run folder without the copy of a stage it was trained over is a ValueError. `run` may be a store URL
    (see fetched)."""
    if not storage.is_url(run):
        return _load_local(run, kinds=kinds, device=device, flag=flag)
    local = fetched(run)
    with _named_as(local, str(run_folder(run)).rstrip("/")):
        return _load_local(local, kinds=kinds, device=device, flag=flag)


def _load_local(run: str | Path, *, kinds: tuple[str, ...] | None, device, flag: str) -> Run:
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
