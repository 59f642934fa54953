"""Motion prompts from a clip's own pose track, for clips without captions: head actions, then sentences in the
style of CelebV-Text's action captions ("The person talks and nods for a short time, then turns their head to
the left.").

Directions are the person's own, as CelebV-Text captions describe the person. With posetalk's angles
(geometry.py): yaw > 0 (nose towards the image's right) is the person turning to THEIR LEFT; pitch > 0 is looking
up; roll > 0 (counter-clockwise on screen, the eye on the image's right goes up) is the head tilting towards the
person's RIGHT shoulder. For a frontal, non-mirrored face the person's left is the image's right.

Detection, per angle, on the track smoothed with a 0.2 s centred filter:
- swings are found with hysteresis (a zigzag): a turning point counts once the angle has come back by at least
  the threshold. A swing's motion is the part between 10 % and 90 % of its change.
- nod / shake: at least `nod_swings` pitch swings (down and up) / `shake_swings` yaw swings, each of at least
  `osc_deg` (pitch 4, yaw 5 degrees), each moving within `osc_swing_s` (0.7 s), with pauses of at most
  `osc_gap_s` (0.5 s) between them.
- turn left / right, look up / down, tilt left / right: a swing of at least `turn_deg` (yaw 12, pitch 10,
  roll 8 degrees) outside any nod / shake. A swing that undoes the previous one on the same angle (ends within
  3 degrees or 35 % of its change of where that one started) is a return: "recentre" ("turns back to the
  front", "looks straight ahead again", "straightens their head").
- still: a stretch of at least `still_s` (1.5 s) without actions in which every angle stays within a
  `still_deg` (4 degrees) range; the whole clip when nothing else happens and it stays within that range.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .geometry import smooth_zero_phase

AXES = ("yaw", "pitch", "roll")


@dataclass(frozen=True)
class Action:
    kind: str           # nod shake turn_left turn_right look_up look_down tilt_left tilt_right recentre still
    start_s: float
    end_s: float
    strength: float     # degrees: median swing for nod/shake, the change for a turn, the largest range for still
    axis: str = ""      # yaw / pitch / roll; "" for still
    swings: int = 1     # swings in a nod / shake


@dataclass(frozen=True)
class Thresholds:
    smooth_s: float = 0.2
    osc_deg: tuple[float, float, float] = (5.0, 4.0, 4.0)       # yaw, pitch, roll
    osc_swing_s: float = 0.7
    osc_gap_s: float = 0.5
    nod_swings: int = 2
    shake_swings: int = 3
    turn_deg: tuple[float, float, float] = (12.0, 10.0, 8.0)    # yaw, pitch, roll
    recentre_deg: float = 3.0
    recentre_frac: float = 0.35
    still_deg: float = 4.0
    still_s: float = 1.5


SUSTAINED = {("yaw", 1): "turn_left", ("yaw", -1): "turn_right", ("pitch", 1): "look_up",
             ("pitch", -1): "look_down", ("roll", 1): "tilt_right", ("roll", -1): "tilt_left"}


# ---------------------------------------------------------------- detection (plain functions of arrays)
def turning_points(x: np.ndarray, h: float) -> list[int]:
    """Indices of alternating extremes of x, each at least h from the previous one (hysteresis zigzag)."""
    points: list[int] = []
    lo = hi = 0
    direction = 0                                   # +1 rising, -1 falling, 0 undecided
    for i in range(1, len(x)):
        if x[i] > x[hi]:
            hi = i
        if x[i] < x[lo]:
            lo = i
        if direction >= 0 and x[hi] - x[i] >= h:    # fell far enough: hi was a peak
            if direction == 0 and lo < hi:
                points.append(lo)
            points.append(hi)
            direction, lo = -1, i
        elif direction <= 0 and x[i] - x[lo] >= h:  # rose far enough: lo was a trough
            if direction == 0 and hi < lo:
                points.append(hi)
            points.append(lo)
            direction, hi = 1, i
    if direction:
        points.append(hi if direction > 0 else lo)
    return points


def _motion(x: np.ndarray, i0: int, i1: int) -> tuple[int, int]:
    """Frames where a swing from x[i0] to x[i1] moves: last below 10 % of the change .. first at 90 %."""
    rel = (x[i0 : i1 + 1] - x[i0]) / (x[i1] - x[i0])
    end = int(np.argmax(rel >= 0.9))
    below = np.flatnonzero(rel[: end + 1] < 0.1)
    return i0 + (int(below[-1]) if len(below) else 0), i0 + end


def _swings(x: np.ndarray, h: float) -> list[tuple[int, int, int, int]]:
    """(i0, i1, motion_start, motion_end) of each swing of at least h."""
    pts = turning_points(x, h)
    return [(a, b, *_motion(x, a, b)) for a, b in zip(pts, pts[1:])]


def _oscillations(x: np.ndarray, axis: int, fps: float, th: Thresholds) -> list[Action]:
    kind, need = ("shake", th.shake_swings) if axis == 0 else ("nod", th.nod_swings)
    runs: list[list[tuple]] = []
    for sw in _swings(x, th.osc_deg[axis]):
        if (sw[3] - sw[2]) / fps > th.osc_swing_s:
            runs.append([])                          # a slow swing ends a run
            continue
        if runs and runs[-1] and (sw[2] - runs[-1][-1][3]) / fps <= th.osc_gap_s:
            runs[-1].append(sw)
        else:
            runs.append([sw])
    return [Action(kind, run[0][2] / fps, run[-1][3] / fps,
                   float(np.median([abs(x[b] - x[a]) for a, b, _, _ in run])), AXES[axis], len(run))
            for run in runs if len(run) >= need]


def _sustained(x: np.ndarray, axis: int, fps: float, th: Thresholds, busy: list[Action]) -> list[Action]:
    out, came_from = [], None                        # where the previous (not undone) swing started
    for a, b, s, e in _swings(x, th.turn_deg[axis]):
        change = x[b] - x[a]
        if _overlap(s / fps, e / fps, busy) > 0.5:
            continue                                 # part of a nod / shake
        tol = max(th.recentre_deg, th.recentre_frac * abs(change))
        back = came_from is not None and abs(x[b] - came_from) <= tol
        kind = "recentre" if back else SUSTAINED[(AXES[axis], int(np.sign(change)))]
        came_from = None if back else x[a]
        out.append(Action(kind, s / fps, e / fps, float(abs(change)), AXES[axis]))
    return out


def _overlap(start: float, end: float, actions: list[Action]) -> float:
    """Fraction of [start, end] covered by the actions."""
    covered = sum(max(0.0, min(end, a.end_s) - max(start, a.start_s)) for a in actions)
    return covered / max(end - start, 1e-9)


def _still(angles: np.ndarray, fps: float, th: Thresholds, actions: list[Action]) -> list[Action]:
    duration = len(angles) / fps
    edges = sorted((a.start_s, a.end_s) for a in actions)
    gaps, t = [], 0.0
    for start, end in edges:
        gaps.append((t, start))
        t = max(t, end)
    gaps.append((t, duration))
    out = []
    for start, end in gaps:
        seg = angles[int(round(start * fps)) : int(round(end * fps))]
        if end - start >= min(th.still_s, duration) and len(seg):
            spread = float((seg.max(0) - seg.min(0)).max())
            if spread <= th.still_deg:
                out.append(Action("still", start, end, spread))
    return out


def detect_actions(pose: np.ndarray, fps: float = 25.0, thresholds: Thresholds = Thresholds()) -> list[Action]:
    """(T, 3) or (T, 6) pose (yaw, pitch, roll first, degrees; NaN where no face) -> actions in time order."""
    angles = np.asarray(pose, dtype=np.float64)[:, :3]
    t = np.arange(len(angles))
    for d in range(3):                                   # bridge face dropouts linearly
        good = np.isfinite(angles[:, d])
        if good.sum() < 2:
            return []
        angles[:, d] = np.interp(t, t[good], angles[good, d])
    angles = smooth_zero_phase(angles, fps, thresholds.smooth_s)
    actions: list[Action] = []
    for axis in (0, 1):                                  # shakes on yaw, nods on pitch
        actions += _oscillations(angles[:, axis], axis, fps, thresholds)
    busy = list(actions)
    for axis in range(3):
        actions += _sustained(angles[:, axis], axis, fps, thresholds, busy)
    actions += _still(angles, fps, thresholds, actions)
    return sorted(actions, key=lambda a: (a.start_s, a.end_s, a.kind))


# ---------------------------------------------------------------- captions
SUBJECTS = ("The person", "The speaker", "A person", "Someone")
PHRASES = {
    "nod": ("nods", "nods their head"),
    "shake": ("shakes their head", "shakes their head from side to side"),
    "turn_left": ("turns their head to the left", "turns to the left", "looks to the left"),
    "turn_right": ("turns their head to the right", "turns to the right", "looks to the right"),
    "look_up": ("looks up", "raises their head"),
    "look_down": ("looks down", "lowers their head"),
    "tilt_left": ("tilts their head to the left", "leans their head to the left"),
    "tilt_right": ("tilts their head to the right", "leans their head to the right"),
    "recentre_yaw": ("turns back to the front", "faces the camera again"),
    "recentre_pitch": ("looks straight ahead again", "brings their head back to level"),
    "recentre_roll": ("straightens their head", "holds their head upright again"),
    "still": ("keeps their head still", "holds their head steady", "stays still"),
}
REPEATED = {"nod": ("nods repeatedly", "keeps nodding"),
            "shake": ("shakes their head repeatedly", "keeps shaking their head")}
SHORT, MEDIUM, LONG = ("briefly", "for a short time"), ("for a moment", "for a few seconds"), ("for a long time",)
THEN = (", then ", ", and then ", ", and after that ")


def _phrase(action: Action, duration_s: float, rng: np.random.Generator) -> str:
    key = f"recentre_{action.axis}" if action.kind == "recentre" else action.kind
    options = REPEATED[key] if key in REPEATED and action.swings >= 5 else PHRASES[key]
    text = str(rng.choice(options))
    if action.kind in ("nod", "shake", "still"):      # events with a length worth saying
        span = action.end_s - action.start_s
        if action.kind == "still" and span >= 0.8 * duration_s:
            return text + str(rng.choice((" throughout", " the whole time")))
        words = SHORT if span < 1.0 else MEDIUM if span < 3.0 else LONG
        text += " " + str(rng.choice(words))
    return text


def _salient(actions: list[Action], limit: int) -> list[Action]:
    if len(actions) <= limit:
        return actions
    keep = sorted(actions, key=lambda a: -(a.strength * max(a.end_s - a.start_s, 0.2)))[:limit]
    return sorted(keep, key=lambda a: (a.start_s, a.end_s, a.kind))


def _sentence(actions: list[Action], duration_s: float, rng: np.random.Generator, talking: bool) -> str:
    subject = str(rng.choice(SUBJECTS))
    if not actions:
        return f"{subject} talks." if talking else f"{subject} keeps their head still."
    parts = [_phrase(a, duration_s, rng) for a in actions]
    body = parts[0]
    for prev, act, part in zip(actions, actions[1:], parts[1:]):
        overlapping = act.start_s < prev.end_s - 0.1
        body += (" and " if overlapping else str(rng.choice(THEN))) + part
    if talking and rng.random() < 0.5:
        return f"While talking, {subject[0].lower() + subject[1:]} {body}."
    return f"{subject} {'talks and ' if talking else ''}{body}."


def caption(actions: list[Action], duration_s: float, rng_seed: int, n: int = 3, talking: bool = True,
            max_actions: int = 4) -> list[str]:
    """Up to n distinct phrasings of the same actions, the same for the same seed (derive it from the key)."""
    rng = np.random.default_rng(rng_seed)
    chosen = _salient(actions, max_actions)
    out: list[str] = []
    for _ in range(20 * n):
        text = _sentence(chosen, duration_s, rng, talking)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def describe(pose: np.ndarray, fps: float, rng_seed: int, n: int = 3) -> dict:
    """What text.json needs for a clip without captions: prompts, where they came from, the detected actions."""
    actions = detect_actions(pose, fps)
    return {"source": "pose", "prompts": caption(actions, len(pose) / fps, rng_seed, n),
            "actions": [asdict(a) for a in actions]}
