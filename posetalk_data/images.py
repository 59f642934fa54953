"""Still images as the video stages need them: read once, in-process (Pillow), and encoded as a short constant
video (PyAV). No `ffmpeg -loop 1`: on an image it cannot decode, that loop retried for ever.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .media import MediaError, VideoWriter

# Images: larger ones are read reduced (JPEG: while decoding) to at most MAX_IMAGE_SIDE on a side; one that would
# still need more than MAX_IMAGE_PIXELS decoded is refused.
MAX_IMAGE_SIDE = 2048
MAX_IMAGE_PIXELS = 100_000_000


def read_image(path: str | Path) -> tuple[np.ndarray, int]:
    """(RGB uint8 (H, W, 3), frames in the file) of an image file: its first frame, turned upright (EXIF), at most
    MAX_IMAGE_SIDE on a side (a larger JPEG is reduced while decoding, so a huge one costs little). MediaError, with
    the reason, for a file that is not a readable image or is too large to read."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None     # the size is checked below, after draft()
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            img.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))      # JPEG: DCT scaling, a no-op elsewhere
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise MediaError(f"{w}x{h} pixels is more than posetalk reads ({MAX_IMAGE_PIXELS // 10**6} "
                                 f"megapixels); downscale it first, e.g. to {MAX_IMAGE_SIDE} px on the long side")
            img.seek(0)
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise MediaError(f"not an image that can be read ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    scale = MAX_IMAGE_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return rgb, frames


def still_video(image: np.ndarray, out: str | Path, *, seconds: float, fps: int) -> Path:
    """An RGB image (H, W, 3) as a constant H.264 video at high quality (even frame size: the last odd row or
    column dropped), for stages that read video. Encoded in-process: no ffmpeg loop over an image it cannot read."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:
        raise MediaError(f"an image of {image.shape[1]}x{image.shape[0]} pixels has no face to find")
    frame = np.ascontiguousarray(image[:h, :w])
    with VideoWriter(out, width=w, height=h, fps=fps, crf=12, preset="ultrafast") as writer:
        for _ in range(max(round(seconds * fps), 1)):
            writer.write(frame)
    return Path(out)
