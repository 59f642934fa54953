#!/usr/bin/env python
"""Re-derive posetalk_data/assets/face_template_mediapipe478.{npy,json}: the frontal 3D MediaPipe face template.

Runs MediaPipe FaceMesh (static images, refine_landmarks=True: 478 points with irises) on frontal-ish faces:
the portraits in <samples>/images/, the first frame of every clip in <samples>/videos/, skimage's astronaut and
matplotlib's grace_hopper.jpg. Landmarks go to the face frame (pixels; z = MediaPipe z * width, then (u, -v, -z)),
faces whose head yaw or pitch against a first-pass template exceeds --max-angle are dropped (and any listed with
--skip), and posetalk_data.geometry.derive_face_template makes the template: Procrustes mean over the faces and their
mirror images, exact left/right symmetry about x = 0, pitch zero = nasion -> subnasale line vertical, centroid at
the origin, unit = distance between the eye centres. The asset holds only averaged coordinates, no media.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/derive_face_template.py            # writes the asset
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/derive_face_template.py --check    # compares, writes nothing
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from posetalk_data import geometry as geo  # noqa: E402

DEFAULT_SAMPLES = REPO.parent / "shared" / "samples"
DEFAULT_SKIP = ["liveportrait_s10.jpg"]  # Vermeer's girl: head turned ~35 degrees, over the shoulder


def _images(samples: Path):
    """Yield (name, RGB uint8 image) for every source face."""
    import cv2
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    for f in sorted((samples / "images").glob("*")):
        if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
            yield f"images/{f.name}", cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
    for f in sorted((samples / "videos").glob("*")):
        cap = cv2.VideoCapture(str(f))
        ok, frame = cap.read()
        cap.release()
        if ok:
            yield f"videos/{f.name}#frame0", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    yield "skimage.data.astronaut()", skimage.data.astronaut()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        yield "matplotlib sample_data grace_hopper.jpg", np.asarray(Image.open(fh).convert("RGB"))


def detect(samples: Path) -> dict[str, np.ndarray]:
    """name -> (478, 3) face-frame landmarks, for the images where FaceMesh finds a face."""
    import mediapipe as mp

    out = {}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        for name, rgb in _images(samples):
            res = fm.process(np.ascontiguousarray(rgb))
            if not res.multi_face_landmarks:
                print(f"  no face: {name}")
                continue
            h, w = rgb.shape[:2]
            px = np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark])
            out[name] = geo.landmarks_to_face_frame(px)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="shared/samples folder (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=geo.TEMPLATE_PATH, help="output .npy; the .json goes beside it")
    ap.add_argument("--skip", nargs="*", default=DEFAULT_SKIP, help="file names to leave out (default: %(default)s)")
    ap.add_argument("--max-angle", type=float, default=30.0, help="drop faces with |yaw| or |pitch| above this (deg)")
    ap.add_argument("--check", action="store_true", help="derive and compare with the existing asset; write nothing")
    args = ap.parse_args(argv)

    import mediapipe as mp

    sets = {k: v for k, v in detect(args.samples).items() if not any(k.split("#")[0].endswith(s) for s in args.skip)}
    first = geo.derive_face_template(list(sets.values()))
    angles = geo.rotation_to_euler(geo.fit_head_pose(np.stack(list(sets.values())), first).rotation)
    used = {k: v for (k, v), a in zip(sets.items(), angles) if np.abs(a[:2]).max() <= args.max_angle}
    for (k, _), a in zip(sets.items(), angles):
        print(f"  {'use ' if k in used else 'DROP'} {k:55s} yaw {a[0]:+6.1f} pitch {a[1]:+6.1f} roll {a[2]:+6.1f}")
    template = geo.derive_face_template(list(used.values()))
    rms = geo.fit_head_pose(np.stack(list(used.values())), template).rms

    if args.check:
        old = np.load(args.out)
        print(f"max |new - asset| = {np.abs(template - old).max():.2e} (template units)")
        return 0
    perm = geo.mirror_permutation(template)
    meta = {
        "file": args.out.name,
        "shape": list(template.shape),
        "dtype": "float64",
        "what": "frontal 3D face template for MediaPipe FaceMesh's 478 landmarks (468 mesh + 10 iris), face frame "
        "(x image right, y up, z towards the camera)",
        "units": "distance between the two eye centres (midpoints of landmarks 33/133 and 362/263) = 1",
        "origin": "centroid of the 478 points",
        "orientation": "zero rotation: left/right symmetric about x = 0 (yaw = roll = 0); pitch zero: the line from "
        f"landmark {geo.PITCH_LINE[0]} (nasion, between the eyes) to {geo.PITCH_LINE[1]} (subnasale) is vertical "
        "(no depth change along it)",
        "derived_by": "scripts/derive_face_template.py -> posetalk_data.geometry.derive_face_template: generalised "
        "Procrustes (similarity, on RIGID_INDICES) over the faces and their mirror images, then exact "
        "symmetrisation; left/right pairs found by mirroring and one-to-one nearest-neighbour matching",
        "sources": sorted(used),
        "sources_index": "shared/samples/SOURCES.md (origin and sha256 of each sample file)",
        "dropped": sorted(set(sets) - set(used)) + sorted(args.skip),
        "landmarks": "MediaPipe FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1); "
        "pixels with z = MediaPipe z * image width, mapped to (u, -v, -z)",
        "mediapipe_version": mp.__version__,
        "numpy_version": np.__version__,
        "fit_rms_per_source": {k: round(float(r), 4) for k, r in zip(used, rms)},
        "rigid_indices": geo.RIGID_INDICES.tolist(),
        "mirror_permutation": perm.tolist(),
        "date": dt.date.today().isoformat(),
        "note": "averaged landmark coordinates only; contains no image content",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, template)
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name} from {len(used)} faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
