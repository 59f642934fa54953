"""Gaze from the iris, eye openness and blinks, and the consistency figures of a gaze track: plain functions of
arrays. The face frame and angle conventions are those of posetalk_data.geometry; gaze arrays are (T, 4): yaw, pitch
(deg) of the image-left eye, then of the image-right eye, relative to the head (yaw > 0: towards image right,
pitch > 0: up).

What limits gaze from landmarks, measured on the sample clips (see the README's gaze paragraph):
- Where an eye's centre of rotation lies relative to what a camera sees (the eye corners) differs between people by
  several degrees of gaze: the visual axis is ~5 degrees nasal of the iris (angle kappa), and skin folds over the
  inner corner (common in children) shift that corner. So each eye's absolute yaw carries a personal offset of up to
  ~15 degrees, and it is mirrored between the eyes: on a child the two eyes read 25 degrees apart. Only a calibration
  can remove it; we remove its mirrored part, the clip's median left-right difference (eyes look at the same thing).
- Where each eye sits: the rigid head fit moves with expressions (an open mouth shifts the fitted nose and cheeks),
  so eyes placed by it turn together with the mouth: both eyes agree, on the wrong thing; each eye's own corners
  instead follow its iris part of the way. The two placements are averaged (eye_positions).
- A closed eye has no gaze; MediaPipe still returns an iris, off by tens of degrees. Those frames are found from the
  lid gap and filled in (from the other eye, or between the open frames around them), and reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import PoseConfig
from .geometry import EYE_CORNERS, IRIS, HeadPoseFit, eye_centres, load_face_template, smooth_zero_phase

IRIS_DIAMETER_MM, IRIS_TO_CENTRE_MM = 11.7, 10.0  # human averages: visible iris; iris plane to centre of rotation
LIDS = ((159, 145), (386, 374))  # upper and lower lid midpoints, image-left eye then image-right eye
LIP_GAP = (13, 14)  # inner upper and lower lip, midline
CLOSED_BELOW = PoseConfig().eye_closed_below  # shut below this share of the clip's open-eye lid gap (config),
SHUT_OPENNESS = 0.1  # or below this share of its width whatever the clip (a clip whose eyes are never open)


def iris_diameter(points: np.ndarray) -> float:
    """Median over the frames of the iris width over the eye-centre distance (MediaPipe's iris contour; both
    measured in the image plane, so that a head turn shrinks both alike).

    Irises are 11.7 +- 0.5 mm in nearly everyone past infancy, while eye spacing varies (54-74 mm, less in
    children), so the iris is the better ruler for the eyeball."""
    p = np.asarray(points, dtype=np.float64)
    c = eye_centres(p)
    iod = np.linalg.norm(c[..., 1, :2] - c[..., 0, :2], axis=-1)  # both in the image plane: a turn shrinks both
    width = [np.linalg.norm(p[..., i[1], :2] - p[..., i[3], :2], axis=-1) for i in IRIS]
    ratio = np.concatenate([w / iod for w in width])
    ratio = ratio[np.isfinite(ratio)]
    return float(np.median(ratio)) if ratio.size else 0.194  # 0.194: the face template's


def direction(yaw_pitch_deg: np.ndarray) -> np.ndarray:
    """(..., 2) gaze yaw, pitch (deg) -> (..., 3) unit vectors: yaw = atan2(x, z), pitch = asin(y)."""
    y, p = np.deg2rad(yaw_pitch_deg[..., 0]), np.deg2rad(yaw_pitch_deg[..., 1])
    return np.stack([np.cos(p) * np.sin(y), np.sin(p), np.cos(p) * np.cos(y)], -1)


def rest_directions(template: np.ndarray) -> np.ndarray:
    """(2, 2) yaw, pitch (deg) of each eye of the face template (people looking at a camera), seen from a centre of
    rotation straight behind the eye's corner midpoint. They are subtracted from every frame's angles: the template's
    irises sit ~1 mm temporal of the corner midpoint (angle kappa) and above it (the corners lie low)."""
    c = eye_centres(template)
    iod = np.linalg.norm(c[1] - c[0])
    radius = iris_diameter(template[None]) * IRIS_TO_CENTRE_MM / IRIS_DIAMETER_MM
    a = np.stack([template[list(i)].mean(0)[:2] - c[e, :2] for e, i in enumerate(IRIS)]) / (iod * radius)
    z = np.sqrt(np.clip(1 - (a**2).sum(1), 0, None))
    return np.rad2deg(np.stack([np.arctan2(a[:, 0], z), np.arcsin(np.clip(a[:, 1], -1, 1))], 1))


def eye_positions(points: np.ndarray, fit: HeadPoseFit) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2, 3) where each eye sits (corner midpoint, face frame) and (T,) the eye-centre distance.

    The average of two estimates that fail differently, measured on the demo's known gaze and on the sample
    clips: the frame's own eye corners follow the iris (MediaPipe's eye model pulls them ~30% of the way along),
    which shrinks the angles; the person's own eye centres (their clip median in the head frame) placed by the rigid
    head fit move with expressions (an open mouth shifts the fitted nose and cheeks). Averaging halves both."""
    p = np.asarray(points, dtype=np.float64)
    own = eye_centres(p)
    head = ((own - fit.translation[:, None]) @ fit.rotation) / fit.scale[:, None, None]  # inverse similarity
    person = np.nanmedian(head, 0)
    placed = fit.scale[:, None, None] * person @ np.swapaxes(fit.rotation, -1, -2) + fit.translation[:, None]
    iod = (np.linalg.norm(own[:, 1] - own[:, 0], axis=-1) + fit.scale * np.linalg.norm(person[1] - person[0])) / 2
    return (own + placed) / 2, iod


def gaze_from_iris(points: np.ndarray, fit: HeadPoseFit, template: np.ndarray | None = None,
                   diameter: float | None = None) -> np.ndarray:
    """(T, 478, 3) face-frame landmarks + their rigid head fit -> (T, 4) gaze, eye-in-head, degrees.

    Eyeball model, per eye: a sphere fixed in the head straight behind the eye (eye_positions), radius
    IRIS_TO_CENTRE_MM in units of the person's iris (`diameter`: iris width over eye-centre distance, default the
    clip's median). Only the image-plane position of the iris centre is used (MediaPipe's iris depth is
    unreliable); the visible iris is on the camera side of the sphere, which fixes its depth. The direction is
    turned into the head by the fit's rotation, and the template's rest direction (rest_directions) is subtracted
    as an angle: added as a position, as before, it was amplified near the sphere's edge (the eye turning nasally
    read up to 15 degrees further than its partner)."""
    p = np.asarray(points, dtype=np.float64)
    rot = fit.rotation
    tpl = load_face_template() if template is None else np.asarray(template, dtype=np.float64)
    rest, tpl_c = rest_directions(tpl), eye_centres(tpl)
    centres, iod = eye_positions(p, fit)
    radius = (iris_diameter(p) if diameter is None else diameter) * IRIS_TO_CENTRE_MM / IRIS_DIAMETER_MM
    out = []
    for e, iris in enumerate(IRIS):
        o = (tpl[list(iris)].mean(0) - tpl_c[e]) / np.linalg.norm(tpl_c[1] - tpl_c[0])  # rest iris from the corners
        behind = o[2] - np.sqrt(max(radius**2 - o[0] ** 2 - o[1] ** 2, 0.0))  # the rest iris lies on the sphere
        ball = centres[:, e] + iod[:, None] * (rot @ np.array([0.0, 0.0, behind]))
        a = (p[:, list(iris), :2].mean(1) - ball[:, :2]) / (radius * iod[:, None])
        n2 = (a**2).sum(-1, keepdims=True)
        a = a / np.sqrt(np.maximum(n2, 1.0))  # at most 90 degrees off the camera axis
        m = np.concatenate([a, np.sqrt(np.clip(1.0 - n2, 0.0, None))], -1)  # unit gaze, camera frame
        n = (np.swapaxes(rot, -1, -2) @ m[..., None])[..., 0]  # head frame
        out += [np.rad2deg(np.arctan2(n[:, 0], n[:, 2])) - rest[e, 0],
                np.rad2deg(np.arcsin(np.clip(n[:, 1], -1, 1))) - rest[e, 1]]
    return np.stack(out, -1)


def eye_openness(points: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T, 2) lid gap over eye width (image plane) of each eye, image-left first. Open eyes read
    ~0.2-0.45 depending on the person, shut ones ~0.02-0.1."""
    p = np.asarray(points, dtype=np.float64)
    out = []
    for (up, low), (a, b) in zip(LIDS, EYE_CORNERS):
        width = np.linalg.norm(p[..., a, :2] - p[..., b, :2], axis=-1)
        out.append(np.linalg.norm(p[..., up, :2] - p[..., low, :2], axis=-1) / np.maximum(width, 1e-9))
    return np.stack(out, -1)


def closed_eyes(openness: np.ndarray, below: float = CLOSED_BELOW) -> np.ndarray:
    """(T, 2) openness -> (T, 2) bool, True where an eye is shut: its gap is under `below` times the clip's open
    level (the 75th percentile: blinks and squints are a minority of frames) or under SHUT_OPENNESS. One frame
    either side is included, because a lid half-way down already pushes MediaPipe's iris off."""
    o = np.asarray(openness, dtype=np.float64)
    level = np.nanpercentile(o, 75, axis=0) if np.isfinite(o).any() else np.zeros(o.shape[1:])
    shut = ~((o >= below * level) & (o >= SHUT_OPENNESS))  # NaN (no face) counts as shut
    grown = shut.copy()
    grown[1:] |= shut[:-1]
    grown[:-1] |= shut[1:]
    return grown


def remove_vergence(gaze: np.ndarray, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the clip's median left-right difference (yaw, pitch; frames with both eyes open), half from each
    eye. Returns the gaze and the difference removed (2,): the personal offset the landmarks cannot separate from
    a steady squint, a few degrees for most adults (see the module docstring)."""
    g = np.array(gaze, dtype=np.float64)
    both = ~closed.any(1)
    diff = np.median(g[both][:, [0, 1]] - g[both][:, [2, 3]], 0) if both.any() else np.zeros(2)
    g[:, [0, 1]] -= diff / 2
    g[:, [2, 3]] += diff / 2
    return g, diff


def fill_closed(gaze: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """Gaze where an eye is shut: the other eye's if it is open (eyes turn together), else a straight line between
    the open frames around the gap (held at the clip's ends); 0 if the eyes are never open."""
    g = np.array(gaze, dtype=np.float64)
    for e, other in ((0, 1), (1, 0)):
        wink = closed[:, e] & ~closed[:, other]
        g[wink, 2 * e: 2 * e + 2] = g[wink, 2 * other: 2 * other + 2]
    both = closed.all(1)
    t = np.arange(len(g))
    for k in range(4):
        g[both, k] = np.interp(t[both], t[~both], g[~both, k]) if (~both).any() else 0.0
    return g


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T,) inner-lip gap over the eye-centre distance."""
    p = np.asarray(points, dtype=np.float64)
    c = eye_centres(p)
    return np.linalg.norm(p[..., LIP_GAP[0], :] - p[..., LIP_GAP[1], :], axis=-1) / np.linalg.norm(
        c[..., 1, :] - c[..., 0, :], axis=-1)


@dataclass
class GazeTrack:
    gaze: np.ndarray  # (T, 4) degrees, smoothed, closed-eye frames filled
    openness: np.ndarray  # (T, 2) lid gap over eye width
    closed: np.ndarray  # (T, 2) bool: the eye was shut (its gaze is filled, not measured)
    vergence: np.ndarray  # (2,) left-minus-right yaw, pitch offset removed (deg)


def gaze_track(points: np.ndarray, fit: HeadPoseFit, template: np.ndarray, fps: float, smooth_s: float,
               closed_below: float = CLOSED_BELOW) -> GazeTrack:
    """A clip's gaze: per-frame angles, shut eyes found, the personal left-right offset removed, shut frames filled,
    then smoothed without lag (after filling, so a blink does not smear into the frames around it)."""
    raw = gaze_from_iris(points, fit, template)
    openness = eye_openness(points)
    closed = closed_eyes(openness, closed_below) | ~np.isfinite(raw).reshape(len(raw), 2, 2).all(-1)
    gaze, vergence = remove_vergence(raw, closed)
    gaze = smooth_zero_phase(fill_closed(gaze, closed), fps, smooth_s)
    return GazeTrack(gaze, openness, closed, vergence)


def _r(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r, or None where either side is (nearly) constant or there are too few frames."""
    if len(a) < 3 or np.std(a) < 1e-6 or np.std(b) < 1e-6:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def spans(mask: np.ndarray) -> list[list[int]]:
    """[start, end) frame spans where a (T,) bool mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask, np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def consistency(gaze: np.ndarray, closed: np.ndarray, mouth: np.ndarray, head_yaw: np.ndarray) -> dict:
    """Label-free checks of a clip's gaze, on the frames where both eyes are open: do the eyes agree (r of their
    yaw and pitch, mean absolute yaw difference, deg), how far gaze moves (yaw spread, p95 - p5), and does it
    follow the mouth (the larger |r| of yaw and pitch with the lip gap) or the head (r of yaw with head yaw;
    a talker who keeps looking at the camera counter-rotates the eyes, so this is negative by nature)."""
    g = np.asarray(gaze, dtype=np.float64)[~closed.any(1)]
    m, h = np.asarray(mouth)[~closed.any(1)], np.asarray(head_yaw)[~closed.any(1)]
    if len(g) < 3:
        return {"gaze_lr_yaw_r": None, "gaze_lr_pitch_r": None, "gaze_lr_yaw_diff": None, "gaze_yaw_range": None,
                "gaze_mouth_r": None, "gaze_head_yaw_r": None}
    yaw, pitch = g[:, [0, 2]].mean(1), g[:, [1, 3]].mean(1)
    with_mouth = [abs(r) for r in (_r(yaw, m), _r(pitch, m)) if r is not None]
    return {"gaze_lr_yaw_r": _r(g[:, 0], g[:, 2]), "gaze_lr_pitch_r": _r(g[:, 1], g[:, 3]),
            "gaze_lr_yaw_diff": float(np.abs(g[:, 0] - g[:, 2]).mean()),
            "gaze_yaw_range": float(np.percentile(yaw, 95) - np.percentile(yaw, 5)),
            "gaze_mouth_r": max(with_mouth) if with_mouth else None, "gaze_head_yaw_r": _r(yaw, h)}
