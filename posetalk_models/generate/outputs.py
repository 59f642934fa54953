"""The files one generation command writes together (a video with its pose .npy and .json sidecar; a pose .npy with
its .json and .png plot): checked before any work, published together.

Before the work (`check_outputs`): no output may be one of the command's inputs or lie inside an input folder
(compared as resolved paths and by inode, so `dir/../dir/x`, symlinks and hard links count); unless --force, none
may lie in a training run's folder, and none may replace a file this command did not make (its own earlier outputs
are recognised by their JSON sidecar, which names the command).

After the work (`published`): every file is written under a temporary name beside its final one and renamed only
when all are complete; a failure or Ctrl-C on the way removes the temporary files and leaves what was there as it
was.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

RUN_MARKERS = ("*.safetensors", "metrics.jsonl")        # what a training run's folder holds


def same_file(a: Path, b: Path) -> bool:
    """The same file, however named: resolved paths, then device and inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def inside(path: Path, folder: Path) -> bool:
    return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and any(next(folder.glob(pattern), None) for pattern in RUN_MARKERS)


def made_by(sidecar: Path, command: str) -> bool:
    """Whether `sidecar` is the JSON sidecar `command` writes (so the files beside it are its earlier outputs)."""
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("command") == command


def check_outputs(outputs: list[Path], sidecar: Path, command: str, inputs: dict[str, Path | None], *,
                  force: bool) -> None:
    """A one-line ValueError when writing `outputs` would overwrite an input (never allowed), write into a run's
    folder or replace a file `command` did not make (allowed with force). inputs: {"--flag": file or folder}."""
    main = outputs[0]
    for out in outputs:
        if out.is_dir():
            raise ValueError(f"--out {main}: {out} is a folder; name a file")
        for flag, given in inputs.items():
            if given is None:
                continue
            given = Path(given)
            if same_file(out, given):
                raise ValueError(f"--out {main} would overwrite the input {flag} {given} ({out}); choose another "
                                 "--out")
            if inside(out, given):
                raise ValueError(f"--out {main} lies inside {flag} {given}, which this command reads; write "
                                 "elsewhere")
    if force:
        return
    if is_run_folder(main.parent):
        raise ValueError(f"--out {main}: {main.parent} holds a training run's files, which the outputs could "
                         "replace; write elsewhere, or add --force")
    if not made_by(sidecar, command):
        existing = next((p for p in outputs if p.exists() or p.is_symlink()), None)
        if existing is not None:
            raise ValueError(f"--out {main}: {existing} exists and was not written by {command}; choose another "
                             "--out, or add --force to replace it")


def temporary_name(path: Path) -> Path:
    """Beside the final file, hidden, the suffix kept (ffmpeg and matplotlib choose the format by it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


@contextlib.contextmanager
def published(outputs: list[Path]) -> Iterator[dict[Path, Path]]:
    """{final path: temporary path} to write to; when the block completes, every temporary file is renamed onto its
    final path in the order given (the sidecar last); when it fails, they are removed and the finals untouched."""
    temps = {path: temporary_name(path) for path in outputs}
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        missing = [str(t) for t in temps.values() if not t.is_file()]
        if missing:
            raise RuntimeError(f"not written: {', '.join(missing)}")
        for final, temp in temps.items():
            temp.replace(final)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
