"""How the build report (report.py) is drawn: HTML pieces, figures as PNG and thumbnails as JPEG, each inlined as
base64, so the page needs no other file."""
from __future__ import annotations

import base64
import html
import io

import cv2
import numpy as np
from matplotlib.figure import Figure  # the OO API renders with Agg and keeps no global pyplot state

from .geometry import euler_to_rotation
from .members import mp4_frames

THUMB_PX = 192
AXIS_COLOURS = ((0, 0, 230), (0, 170, 0), (230, 60, 0))  # BGR: face x (red), y (green), z / nose (blue)


def escape(x) -> str:
    return html.escape(str(x))


def table(header: list[str], rows: list[list], numeric: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{escape(c)}</td>" for i, c in
                                     enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def section(sid: str, title: str, content: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{content}</section>'


def img(fid: str, alt: str, data: bytes, mime: str = "image/png", caption: str = "") -> str:
    src = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return (f'<figure id="{escape(fid)}"><img alt="{escape(alt)}" src="{src}">'
            f"<figcaption>{caption or escape(alt)}</figcaption></figure>")


def png(fig: Figure, *, left: float = 0.5) -> bytes:
    """The figure as PNG, with margins fixed in inches (`left`: room for the y tick labels and label): one drawing,
    where bbox_inches="tight" draws the figure twice to measure it (half the report's time)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.3 / height)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def histograms(fid: str, alt: str, panels: list[tuple[str, list[tuple[str, np.ndarray]]]], unit: str) -> str:
    """One row of histograms; each panel overlays named series. An empty series shows 'no data', so every figure
    exists (and renders) even for an empty build."""
    fig = Figure(figsize=(4 * len(panels), 3))
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for name, values in series:
            v = values[np.isfinite(values)]
            if v.size:
                ax.hist(v, bins=40, alpha=0.6, histtype="stepfilled",
                        label=f"{name} (n={v.size})" if name else f"n={v.size}")
        if not ax.patches:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif len(series) > 1 or series[0][0]:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(unit)
    return img(fid, alt, png(fig))




def thumbnail(clip: dict) -> tuple[bytes | None, np.ndarray | None]:
    """JPEG of the clip's middle frame with its landmarks and pose axes drawn, and that frame's yaw/pitch/roll."""
    if "video.mp4" not in clip:
        return None, None
    mid = len(clip["pose"]) // 2
    frame = decode_frame(clip["video.mp4"], mid)
    if frame is None:
        return None, None
    img = cv2.resize(frame, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
    pts = clip.get("landmarks")
    xy = pts[mid, :, :2] * THUMB_PX if pts is not None and pts.ndim == 3 and mid < len(pts) else np.zeros((0, 2))
    xy = xy[np.isfinite(xy).all(1)]
    for x, y in xy:
        cv2.circle(img, (int(round(x)), int(round(y))), 1, (0, 230, 255), -1, cv2.LINE_AA)
    ypr = clip["pose"][mid, :3]
    if np.isfinite(ypr).all():
        # Columns of R are the face frame's axes (x right, y up, z to the camera); image v runs down, hence -y.
        rot = euler_to_rotation(ypr)
        centre = xy.mean(0) if len(xy) else np.array([THUMB_PX / 2, THUMB_PX / 2])
        for k, colour in enumerate(AXIS_COLOURS):
            end = centre + 0.3 * THUMB_PX * np.array([rot[0, k], -rot[1, k]])
            cv2.line(img, tuple(int(v) for v in centre.round()), tuple(int(v) for v in end.round()), colour, 2,
                     cv2.LINE_AA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return (jpg.tobytes() if ok else None), (ypr if np.isfinite(ypr).all() else None)


def decode_frame(video: bytes, index: int) -> np.ndarray | None:
    """Frame `index` (BGR) of an mp4 given as bytes, decoded from memory (decord seeks from the keyframe before)."""
    import decord

    try:
        frame = mp4_frames(video, [index])[0]
    except (decord.DECORDError, RuntimeError, IndexError):
        return None
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
