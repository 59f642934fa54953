"""Writing files so that a reader (or a resumed run after kill -9) never sees half of one: write a temporary name
beside the target, then rename over it in one step."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

CRASH_ENV = "POSETALK_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL, as `kill -9` would) when POSETALK_CRASH_AT names this point: the crash-safety
    tests use it to land a kill exactly between writing a file and renaming it, which a test polling from outside
    could only hit by luck. Points: `write:<file name>` for every atomic write."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` through `path.tmp` and one rename; returns `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    crash_point(f"write:{path.name}")
    os.replace(tmp, path)
    return path


def write_json(path: Path, data, *, indent: int | None = 1, sort_keys: bool = True) -> Path:
    """`data` as JSON at `path`, atomically (see write_atomic)."""
    return write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys))
