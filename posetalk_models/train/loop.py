"""The training loop every model shares: AdamW with warmup, gradient clipping, mixed precision on GPU, DDP when
launched by torchrun, safetensors checkpoints with a JSON sidecar (posetalk_models.checkpoints), resume (refused when the
settings or data changed), metrics.jsonl (+ TensorBoard if present), a rich progress bar.

A trainer hands over an *objective*: an nn.Module whose forward(batch) returns a dict with "loss" (and any figures
to log), and whose `.model` is the part that is trained and checkpointed. Wrapping the objective (not the bare
model) in DDP keeps DDP's gradient hooks on the forward that computes the loss. Optional hooks: `set_step(step)`
(terms that follow a schedule), and a GAN's `discriminator` with `discriminator_loss(batch, disc)`, which the loop
trains with a second optimiser after every generator step (`_Adversary`).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from posetalk_models.train.config import LoopConfig
from posetalk_models.data.windows import loader
from posetalk_models.checkpoints import (CheckpointError, check_resume, last_checkpoint, load_state, load_weights,
                                         save_checkpoint, save_state, save_weights, temporary)


# ------------------------------------------------------------------ devices, precision, processes
def pick_device(name: str) -> torch.device:
    if name == "auto":
        if is_distributed() and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} (--device or loop.device): use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu "
                         "(or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered "
                         "from 0")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None = float32. auto: bf16 where the GPU has it, else fp16; CPU stays float32 (bf16 there is slower)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes in the environment.

    The group joined here serves every later run in the process and is destroyed when the process exits: creating
    the default group again after destroying it can hang on the rendezvous store's old keys (pytorch#55967), so a
    run does not end it, and a process must not leave with it alive (NCCL leaks and warns)."""
    if not is_distributed():
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_group)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _leave_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class _Log:
    """metrics.jsonl, and TensorBoard scalars when the package is installed; rank 0 only."""

    def __init__(self, run_dir: Path, tensorboard: bool, step: int):
        self.file = self._trimmed(run_dir / "metrics.jsonl", step).open("a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # optional: the JSON lines are the record
                pass

    @staticmethod
    def _trimmed(path: Path, step: int) -> Path:
        """metrics.jsonl as of the checkpoint a run resumes from: rows of later steps (training a kill lost, which
        the run does again) and a line cut short by the kill are dropped, so every row is whole and steps repeat
        nowhere."""
        if not path.is_file():
            return path
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.endswith("\n") and _step_of(line) is not None and _step_of(line) <= step]
        if kept != lines:
            tmp = temporary(path)
            tmp.write_text("".join(kept))
            tmp.replace(path)
        return path

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class _Adversary:
    """A GAN objective's second optimiser. The objective holds the discriminator (`objective.discriminator`) and
    says how it learns (`objective.discriminator_loss(batch, disc)`, from what its last forward made); the loop
    trains it after every generator step, with the discriminator's weights frozen during the generator's step so
    the generator's loss never trains it. Under DDP it has its own wrapper (its gradients are averaged on their own)."""

    def __init__(self, objective: nn.Module, loop: LoopConfig, device: torch.device, world: int):
        self.objective, self.disc, self.clip = objective, objective.discriminator.to(device), loop.grad_clip
        self.params = list(self.disc.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=loop.lr, betas=(0.5, 0.999), weight_decay=0.0)
        self.wrapped = self.disc if world == 1 else torch.nn.parallel.DistributedDataParallel(
            self.disc, device_ids=[device.index] if device.type == "cuda" else None)
        self.disc.requires_grad_(False)     # before the generator's DDP is built: it must not take these weights

    def step(self, batch: dict, scaler: torch.amp.GradScaler, autocast) -> dict[str, torch.Tensor]:
        self.disc.requires_grad_(True)
        with autocast():
            losses = self.objective.discriminator_loss(batch, self.wrapped)
        self.opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        scaler.step(self.opt)
        self.disc.requires_grad_(False)
        return {f"disc_{k}": v for k, v in losses.items()}

    def save(self, path: Path) -> None:
        save_state(path.with_suffix(".disc.opt.pt"), self.opt.state_dict())
        save_weights(path.with_suffix(".disc.safetensors"), self.disc, {"kind": "discriminator"})

    def load(self, path: Path, device: torch.device) -> None:
        if path.with_suffix(".disc.safetensors").is_file():   # a run that had no discriminator yet starts one
            load_weights(self.disc, path.with_suffix(".disc.safetensors"), device)
            self.opt.load_state_dict(load_state(path.with_suffix(".disc.opt.pt"), device))


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, adversary: _Adversary | None,
            device: torch.device) -> None:
    """Weights and optimiser state from checkpoint `path`; a damaged one is a CheckpointError that says how to
    resume from the one before."""
    try:
        load_weights(model, path, device)
        opt.load_state_dict(load_state(path.with_suffix(".opt.pt"), device))
        if adversary is not None:
            adversary.load(path, device)
    except CheckpointError as err:
        raise CheckpointError(f"{err}. To resume from the checkpoint before it, move {path.stem}.* out of "
                              f"{path.parent}") from None


# ------------------------------------------------------------------ the loop
def manifest_batches(manifest: str | Path, data, loop: LoopConfig, make: Callable = loader, **kwargs
                     ) -> Callable[[int], Iterator[dict]]:
    """`train`'s batches(step): the manifest's items from `make` (the pose windows' `loader`, the video models'
    `frame_loader`), seeded by the step so a resumed run draws fresh ones."""
    def batches(step: int) -> Iterator[dict]:
        seeded = data.model_copy(update={"seed": data.seed + step})
        return iter(make(manifest, seeded, batch_size=loop.batch_size, num_workers=loop.num_workers, **kwargs))

    return batches


def train(name: str, run_dir: str | Path, objective: nn.Module, batches: Callable[[int], Iterator[dict]],
          loop: LoopConfig, sidecar: dict, *, evaluate: Callable[[], dict] | None = None,
          device: torch.device | None = None) -> Path | None:
    """Train objective.model until loop.max_steps, resuming from run_dir's last checkpoint.

    batches(step) gives the batch iterator for a run (re)starting at `step` (a resumed run draws fresh windows).
    evaluate() adds held-out figures to the log at every checkpoint. Returns the last checkpoint's path."""
    run_dir = Path(run_dir)
    check_resume(run_dir, sidecar)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = device or pick_device(loop.device)
    rank, world = init_distributed(device)
    model = objective.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    step, last = 0, None
    path, saved = last_checkpoint(run_dir)
    adversary = _Adversary(objective, loop, device, world) if getattr(objective, "discriminator", None) else None
    if path is not None:  # resume: weights and optimiser from the checkpoint, the rest from the config
        _resume(path, model, opt, adversary, device)
        step, last = saved["step"], path
    if step >= loop.max_steps:
        return last
    start = step  # the warmup continues where the run left it
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (start + s + 1) / max(loop.warmup_steps, 1)))
    dtype = autocast_dtype(device, loop.precision)
    autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)   # noqa: E731
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    wrapped = objective
    if world > 1:
        # static graph: the same parameters take part in every step, but not necessarily all of them (a PLD
        # trained on one condition never uses the other's projection), which plain DDP fails on at step 2
        wrapped = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
        # every rank seeded alike built the same weights (DDP broadcasts rank 0's anyway); from here on each rank
        # needs its own noise, dropout and diffusion timesteps, or the ranks' gradients share them
        torch.manual_seed(loop.seed + rank)
    chief = rank == 0
    data, fresh = batches(step), True       # first: data that cannot give an item is refused before any log
    log = _Log(run_dir, loop.tensorboard, step) if chief else None
    progress = _progress(loop.progress and chief)
    objective.train()
    t0, logged = time.perf_counter(), step
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task(name, total=loop.max_steps, completed=step) if progress else None
            while step < loop.max_steps:
                batch = next(data, None)
                if batch is None:  # epoch mode (data.resample false): the next epoch; every rank ends together
                    if fresh:
                        raise ValueError(f"{name}: an epoch gave no training items (fewer clips than ranks, or no "
                                         "clip long enough for one item)")
                    data, fresh = batches(step), True
                    continue
                fresh = False
                batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                if hasattr(objective, "set_step"):      # objectives whose terms follow a schedule
                    objective.set_step(step)
                with autocast():
                    losses = wrapped(batch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                scaler.unscale_(opt)
                grad = torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
                scaler.step(opt)
                if adversary is not None:
                    losses.update(adversary.step(batch, scaler, autocast))
                scaler.update()
                sched.step()
                step += 1
                if progress:
                    progress.update(task, completed=step, description=f"{name} loss {losses['loss'].item():.4f}")
                at_ckpt = step % loop.ckpt_every == 0 or step == loop.max_steps
                if chief and at_ckpt:
                    last = save_checkpoint(run_dir, model, opt, step, sidecar, loop.keep_checkpoints, adversary)
                if chief and (at_ckpt or step % loop.log_every == 0):
                    row = {"step": step, **{k: round(float(v.detach()), 6) for k, v in losses.items()},
                           "grad_norm": round(float(grad), 4), "lr": sched.get_last_lr()[0],
                           "s_per_step": round((time.perf_counter() - t0) / (step - logged), 4)}
                    if device.type == "cuda":
                        row["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                    if evaluate is not None and at_ckpt:
                        row.update(evaluate())
                        objective.train()
                    log.write(row)
                    t0, logged = time.perf_counter(), step
    finally:
        if log is not None:
            log.close()
    return last
