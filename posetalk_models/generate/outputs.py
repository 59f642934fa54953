"""The files one generation command writes together (a video with its pose .npy and .json sidecar; a pose .npy with
its .json and .png plot): checked before any work, published together.

Before the work (`check_outputs`): no output may be one of the command's inputs or lie inside an input folder
(compared as resolved paths and by inode, so `dir/../dir/x`, symlinks and hard links count); unless --force, none
may lie in a training run's folder, and none may replace a file this command did not make (its own earlier outputs
are recognised by their JSON sidecar, which names the command).

After the work (`published`): every file is written under a temporary name beside its final one and renamed only
when all are complete; a failure or Ctrl-C on the way removes the temporary files and leaves what was there as it
was. Outputs may be store URLs (s3://, gs://): the checks then ask the store (the same key, a prefix inside an
input's, a run's files beside it, an earlier sidecar), the files are written in a local temporary folder and
uploaded one by one only when all are complete, each in one PUT (whole or not at all), the sidecar last.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from pathlib import Path
from typing import Iterator

from posetalk_data import storage

RUN_MARKERS = ("*.safetensors", "metrics.jsonl")        # what a training run's folder holds


def same_file(a, b) -> bool:
    """The same file, however named: resolved paths, then device and inode (hard links); in a store the same key."""
    if storage.is_url(a) or storage.is_url(b):
        return storage.key(a) == storage.key(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def on_disk_link(path) -> bool:
    """A symlink on this disk (exists() is false for a dangling one, which writing would still follow)."""
    return not storage.is_url(path) and Path(path).is_symlink()


def inside(path, folder) -> bool:
    if storage.is_url(path) or storage.is_url(folder):
        return storage.relative_to(path, folder) is not None
    return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())


def is_run_folder(folder) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for name in storage.listdir(folder) for pattern in RUN_MARKERS)


def made_by(sidecar, command: str) -> bool:
    """Whether `sidecar` is the JSON sidecar `command` writes (so the files beside it are its earlier outputs)."""
    try:
        info = storage.read_json(sidecar)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("command") == command


def check_outputs(outputs: list, sidecar, command: str, inputs: dict, *, force: bool, main=None) -> None:
    """A one-line ValueError when writing `outputs` would overwrite an input (never allowed), write into a run's
    folder or replace a file `command` did not make (allowed with force). inputs: {"--flag": file or folder}, each
    a path or URL. main: what --out named (default: the first output)."""
    main = outputs[0] if main is None else main
    for out in outputs:
        if storage.is_dir(out):
            raise ValueError(f"--out {main}: {out} is a folder; name a file")
        for flag, given in inputs.items():
            if given is None:
                continue
            given = storage.location(given)
            if same_file(out, given):
                raise ValueError(f"--out {main} would overwrite the input {flag} {given} ({out}); choose another "
                                 "--out")
            if inside(out, given):
                raise ValueError(f"--out {main} lies inside {flag} {given}, which this command reads; write "
                                 "elsewhere")
    if force:
        return
    folder = storage.parent(sidecar)
    if is_run_folder(folder):
        raise ValueError(f"--out {main}: {folder} holds a training run's files, which the outputs could "
                         "replace; write elsewhere, or add --force")
    if not made_by(sidecar, command):
        existing = next((p for p in outputs if storage.exists(p) or on_disk_link(p)), None)
        if existing is not None:
            raise ValueError(f"--out {main}: {existing} exists and was not written by {command}; choose another "
                             "--out, or add --force to replace it")


def temporary_name(path, staging: Path) -> Path:
    """Beside the final file (a store's: in the local `staging` folder), hidden, the suffix kept (ffmpeg and
    matplotlib choose the format by it)."""
    folder = staging if storage.is_url(path) else Path(path).parent
    stem, suffix = os.path.splitext(storage.name(path))
    return folder / f".{stem}.{os.getpid()}.partial{suffix}"


@contextlib.contextmanager
def published(outputs: list) -> Iterator[dict]:
    """{final location: temporary local path} to write to; when the block completes, every temporary file is
    renamed (or uploaded, one PUT each) onto its final location in the order given (the sidecar last); when it
    fails, they are removed and the finals untouched."""
    with tempfile.TemporaryDirectory(prefix="posetalk_out_") as staging:
        temps = {path: temporary_name(path, Path(staging)) for path in outputs}
        for path in outputs:
            storage.makedirs(storage.parent(path))
        try:
            yield temps
            missing = [str(t) for t in temps.values() if not t.is_file()]
            if missing:
                raise RuntimeError(f"not written: {', '.join(missing)}")
            for final, temp in temps.items():
                storage.put_file(temp, final)
        finally:
            for temp in temps.values():
                temp.unlink(missing_ok=True)
