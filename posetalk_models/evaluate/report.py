"""What posetalk-eval writes: the labelled table (metrics.md), JSON-safe figures (metrics.json) and a strip of
frames per clip that a person can look at."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from posetalk_models.evaluate import metrics as vm

STRIP_FRAMES = 6


def strip(rows: dict[str, np.ndarray], path: Path) -> Path:
    """A picture a person can look at: STRIP_FRAMES frames spread over the clip, one labelled row per method."""
    t = min(len(f) for f in rows.values())
    idx = np.linspace(0, t - 1, STRIP_FRAMES).round().astype(int)
    lines = []
    for name, frames in rows.items():
        line = np.concatenate([frames[i] for i in idx], 1).copy()
        cv2.putText(line, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(lines, 0), cv2.COLOR_RGB2BGR))
    return path


def mean_rows(per_clip: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per row, each metric's mean over the clips that have it."""
    rows: dict[str, dict[str, list[float]]] = {}
    for clip_rows in per_clip.values():
        for row, figures in clip_rows.items():
            for name, value in figures.items():
                rows.setdefault(row, {}).setdefault(name, []).append(value)
    return {row: {name: float(np.mean(values)) for name, values in figures.items()} for row, figures in rows.items()}


def markdown(rows: dict[str, dict[str, float]], errors: dict[str, str], settings: dict,
             incomplete: dict[str, list[str]] | None = None) -> str:
    incomplete = incomplete or {}
    names = [m for m in vm.DEFINITIONS if any(m in r for r in rows.values())]
    fmt = lambda v: "inf" if v is not None and math.isinf(v) else "-" if v is None else f"{v:.4g}"  # noqa: E731
    lines = ["# posetalk-eval", "", f"Self-reenactment on `{settings['manifest']}`: {settings['clips']} clip(s), "
             f"{settings['size']} px. Source = each clip's first frame; driving pose, gaze and speech = the clip's "
             "own.", "", "| row | " + " | ".join(vm.DEFINITIONS[m][0] for m in names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {row}{' (incomplete: not averaged)' if row in incomplete else ''} | "
              + " | ".join(fmt(figures.get(m)) for m in names) + " |" for row, figures in rows.items()]
    if incomplete:
        lines += ["", "## Incomplete rows", "", "A method's video must cover every clip; these rows are not averaged "
                  "(their complete clips are in metrics.json, per_clip).", ""]
        lines += [f"- {row}: {'; '.join(why)}" for row, why in incomplete.items()]
    lines += ["", "## Definitions", ""] + [f"- **{vm.DEFINITIONS[m][0]}**: {vm.DEFINITIONS[m][1]}" for m in names]
    if errors:
        lines += ["", "## Not computed", ""] + [f"- {name}: {why}" for name, why in errors.items()]
    return "\n".join(lines) + "\n"


def finite(value):
    """JSON-safe: inf / nan (PSNR of identical frames) written as the strings "inf" / "nan"."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
