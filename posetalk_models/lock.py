"""Who owns a run folder: the lock a training command holds on --out, and what a killed writer left behind.

Two trainings on one run folder would interleave metrics.jsonl and overwrite each other's checkpoints, so a training
command holds OUT/.lock (its process id and host) while it runs. A lock whose process is gone (a run killed with
kill -9 cannot remove it) is reported, not taken over: the command says so and how to remove it, since a lock from
another machine, or a reused process id, cannot be told apart from a live one with certainty.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path

LOCK = ".lock"


class RunLocked(ValueError):
    """--out is held by another training, or by the stale lock of one that was killed."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a writer killed mid-checkpoint left: *.tmp-<pid> files of processes that are gone (never
    renamed), and the companions (sidecar, optimiser state) of a step-N checkpoint whose weights, renamed last, never
    appeared (no reader lists such a checkpoint). Returns what was removed."""
    run_dir = Path(run_dir)
    gone = [p for p in run_dir.glob("*.tmp-*") if re.fullmatch(r"\d+", p.name.rsplit("-", 1)[1])
            and not pid_alive(int(p.name.rsplit("-", 1)[1]))]
    gone += [p for p in run_dir.glob("step-*.*") if (m := re.fullmatch(r"(step-\d+)\.(json|opt\.pt|disc\..+)", p.name))
             and not (run_dir / f"{m[1]}.safetensors").is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _refusal(run_dir: Path, lock: Path) -> str:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        holder = {}
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not host:
        return f"{run_dir} is locked by another training ({lock} is being written or unreadable); wait for it, or " \
               f"if no training uses {run_dir}, remove {lock}"
    if host == socket.gethostname() and not pid_alive(pid):
        return f"{run_dir} has a stale lock: {lock} names process {pid} on {host}, which is no longer running (a " \
               f"killed or crashed training); if no other training uses {run_dir}, remove {lock} and run again"
    return f"{run_dir} is in use by another training (process {pid} on {host}, since {holder.get('since', '?')}); " \
           f"wait for it to end or use another --out (if that process is gone, remove {lock})"


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold run_dir/.lock while the block runs; RunLocked if another process holds it. Under torchrun only rank 0
    takes it: the ranks of one run share the folder. A folder this made and left empty is removed again."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--out {run_dir} is a file; name a run folder")
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RunLocked(_refusal(run_dir, lock)) from None
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
    try:
        remove_temporaries(run_dir)     # nobody else writes here while we hold the lock
        yield
    finally:
        lock.unlink(missing_ok=True)
        if made and not any(run_dir.iterdir()):
            run_dir.rmdir()
