"""Source adapter `hdtf`: the five metadata files per subset (RD, WDA, WRA) of HDTF and the videos downloaded from them.

Metadata, as in the HDTF repository's `HDTF_dataset/` folder (found anywhere up to 3 folders below --root):
  <subset>_video_url.txt      name | YouTube url                       <subset>_resolution.txt  name.mp4 | height
  <subset>_annotion_time.txt  name.mp4 | MM:SS-MM:SS per clip          <subset>_crop_ratio.txt  name_<i>.mp4 | zoom
  <subset>_crop_wh.txt        name_<i>.mp4 | x | w | y | h, pixels at the declared height
--root is a folder or an object-store prefix (s3://bucket/hdtf: one listing, the metadata read from the store; the
build's workers download their own videos, and probe them: spans and crop windows are then checked there).
Media, found by file name anywhere under --root:
  <subset>_<name>.mp4 or <name>.mp4   the full video: one spec per interval, the crop window scaled to the file's size
  <subset>_<name>_<nnn>.mp4           a clip already cut and cropped (universome/HDTF download.py): the whole file,
                                      extra["source_offset"] = the interval's start in the full video
Clip ids are `<subset>_<name>_<nnn>` (nnn = interval index), the name download.py gives the cut clips.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

from .. import storage
from ..schema import VideoSpec
from .base import VIDEO_SUFFIXES, Problem, SourceScan, Tree, box_problem, crop_hint, span_problem
from ..splits import split_of

SUBSETS = ("RD", "WDA", "WRA")
KINDS = ("video_url", "resolution", "annotion_time", "crop_wh", "crop_ratio")   # "annotion" sic, as shipped
BOM = b"\xef\xbb\xbf"


def read_table(tree: Tree, path) -> tuple[dict[str, list[str]], list[str]]:
    """name (without .mp4) -> the other fields of its line; plus the file's quirks, survived and noted."""
    file = storage.name(path)
    if not tree.has(path):
        return {}, [f"{file}: missing"]
    raw = storage.read_bytes(path)
    notes = [f"{file}: UTF-8 byte-order mark"] if raw.startswith(BOM) else []
    if raw and not raw.endswith(b"\n"):
        notes.append(f"{file}: no final newline")
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    trailing = sum(1 for line in lines if line.strip() and line != line.rstrip())
    if trailing:
        notes.append(f"{file}: trailing spaces on {trailing} line(s)")
    rows: dict[str, list[str]] = {}
    for line in lines:
        fields = line.split()
        if fields:
            name = fields[0].removesuffix(".mp4")
            if name in rows:
                notes.append(f"{file}: {name} listed twice, the last line kept")
            rows[name] = fields[1:]
    return rows, notes


def seconds(stamp: str) -> int:
    parts = stamp.split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts) or int(parts[-1]) > 59:
        raise ValueError(f"time {stamp!r} is not MM:SS")
    return sum(int(p) * 60 ** k for k, p in enumerate(reversed(parts)))


def interval(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"interval {text!r} is not MM:SS-MM:SS")
    a, b = seconds(start), seconds(end)
    if b <= a:
        raise ValueError(f"interval {text!r} ends before it starts")
    return a, b


def identity_of(subset: str, name: str) -> str:
    # WDA/WRA names are a person plus a video number (AdamKinzinger0..2); RD names (Radio11) carry no person,
    # so each RD video counts as its own identity (a host appearing in two RD videos cannot be told from metadata).
    return name if subset == "RD" else re.sub(r"\d+$", "", name)


def youtube_id(url: str | None) -> str | None:
    if not url:
        return None
    return (parse_qs(urlparse(url).query).get("v") or [None])[0]


def read_metadata(tree: Tree, folder) -> tuple[list[dict[str, Any]], list[Problem], list[str]]:
    """Every annotated clip of every subset (manifest rows), the per-clip problems, and file-level notes."""
    rows, problems, notes = [], [], []
    for subset in SUBSETS:
        tables = {}
        for kind in KINDS:
            tables[kind], file_notes = read_table(tree, storage.join(folder, f"{subset}_{kind}.txt"))
            notes += file_notes
        names = sorted(set(tables["video_url"]) | set(tables["resolution"]) | set(tables["annotion_time"]))
        for name in names:
            video_rows, video_problems = _video_clips(subset, name, tables)
            rows += video_rows
            problems += video_problems
    return rows, problems, notes


def _video_clips(subset: str, name: str, t: dict[str, dict[str, list[str]]]) -> tuple[list[dict], list[Problem]]:
    video = f"{subset}_{name}"
    problems: list[Problem] = []
    res_field = (t["resolution"].get(name) or ["?"])[0]
    resolution = int(res_field) if res_field.isdigit() and int(res_field) > 0 else None
    if resolution is None:
        problems.append(Problem(video, "bad_resolution", f"resolution {res_field!r} in {subset}_resolution.txt: "
                                "its crop windows cannot be scaled; its clips are built without a crop hint", True))
    if name not in t["annotion_time"] or not t["annotion_time"][name]:
        problems.append(Problem(video, "no_intervals", f"no clip intervals in {subset}_annotion_time.txt"))
        return [], problems
    url = (t["video_url"].get(name) or [None])[0]
    rows, previous = [], None
    for i, text in enumerate(t["annotion_time"][name]):
        clip = f"{video}_{i:03d}"
        try:
            start, end = interval(text)
        except ValueError as err:
            problems.append(Problem(clip, "bad_time", f"{subset}_annotion_time.txt: {err}"))
            continue
        if previous and start < previous[1]:
            problems.append(Problem(clip, "overlap", f"interval {text} overlaps {previous[2]} (the two clips "
                                    "share frames)", True))
        previous = (start, end, clip)
        crop, ratio = t["crop_wh"].get(f"{name}_{i}"), t["crop_ratio"].get(f"{name}_{i}")
        box = _crop_box(crop)
        if box is None:
            reason = "no crop window" if crop is None else f"malformed crop window {' '.join(crop)!r}"
            problems.append(Problem(clip, "no_crop", f"{reason} in {subset}_crop_wh.txt: built without a crop hint",
                                    True))
        elif resolution and (why := box_problem(box, None, resolution)):
            problems.append(Problem(clip, "crop_outside", f"{why} declared in {subset}_resolution.txt: "
                                    "built without a crop hint", True))
            box = None
        rows.append({"clip_id": clip, "source": "hdtf", "subset": subset, "video": name, "clip_index": i,
                     "identity": identity_of(subset, name), "youtube_id": youtube_id(url), "url": url,
                     "resolution": resolution, "start": float(start), "end": float(end),
                     "crop_box": box, "crop_ratio": float(ratio[0]) if ratio else None})
    return rows, problems


def _crop_box(fields: list[str] | None) -> list[float] | None:
    """[left, top, right, bottom] from the file's `x w y h`, or None when absent or not four integers."""
    if not fields or len(fields) != 4 or not all(f.isdigit() for f in fields):
        return None
    x, w, y, h = map(float, fields)
    return [x, y, x + w, y + h] if w > 0 and h > 0 else None


def scan(root, *, probe: bool = True) -> SourceScan:
    """Clip specs for the HDTF videos under root (a folder or a store prefix). probe=False skips ffprobe (fast
    inspection), as does a store root: spans are then not checked against the files and crop hints stay in the
    metadata's pixels."""
    tree = Tree(root)
    url_file = tree.find(["*_video_url.txt"], "HDTF metadata (HDTF_dataset/<RD|WDA|WRA>_video_url.txt and the "
                         "other four files per subset, as in the HDTF repository)")
    folder = storage.parent(url_file)
    rows, problems, notes = read_metadata(tree, folder)
    index = tree.media_index(VIDEO_SUFFIXES)
    chosen: dict[str, tuple[Any, bool]] = {}          # clip id -> (file, is a pre-cut clip)
    for row in rows:
        full = index.get(f"{row['subset']}_{row['video']}") or index.get(row["video"])
        cut = index.get(row["clip_id"])
        if full or cut:
            chosen[row["clip_id"]] = (full or cut)[0], not full
        else:
            problems.append(Problem(row["clip_id"], "no_media", f"no file {row['subset']}_{row['video']}.mp4, "
                                    f"{row['video']}.mp4 or {row['clip_id']}.mp4 under --root"))
    infos = tree.probe(path for path, _ in chosen.values()) if probe else {}
    specs = []
    for row in rows:
        if row["clip_id"] in chosen:
            spec, problem = _spec(row, *chosen[row["clip_id"]], infos.get(chosen[row["clip_id"]][0]))
            specs += [spec] if spec else []
            problems += [problem] if problem else []
    files = [tree.rel(p) for s in SUBSETS for k in KINDS if tree.has(p := storage.join(folder, f"{s}_{k}.txt"))]
    counts = {"videos_with_intervals": len({(r["subset"], r["video"]) for r in rows}),
              "videos_without_intervals": sum(p.kind == "no_intervals" for p in problems),
              "clips_annotated": len(rows), "clips_with_crop": sum(r["crop_box"] is not None for r in rows),
              **{f"clips_{s}": sum(r["subset"] == s for r in rows) for s in SUBSETS},
              "identities": len({r["identity"] for r in rows}), "local_files": len({p for p, _ in chosen.values()}),
              "specs": len(specs)}
    return SourceScan("hdtf", tree.root, files, rows, specs, problems, counts, notes, sizes=tree.sizes())


def _spec(row: dict, path, precut: bool, info) -> tuple[VideoSpec | None, Problem | None]:
    clip, file = row["clip_id"], storage.name(path)
    if isinstance(info, str):
        return None, Problem(clip, "unreadable", f"{file}: {info}")
    extra = {"dataset": "HDTF", "subset": row["subset"], "video": row["video"], "clip_index": row["clip_index"],
             "identity": row["identity"], "split": split_of(row["identity"]), "youtube_id": row["youtube_id"],
             "url": row["url"], "annotated_span": [row["start"], row["end"]], "crop_ratio": row["crop_ratio"],
             "declared_resolution": row["resolution"], "crop_hint": None}
    if precut:   # download.py already cut and cropped it: the whole file is the clip
        extra["source_offset"] = row["start"]
        return VideoSpec("hdtf", clip, str(path), extra=extra), None
    problem = None
    if info is not None and (why := span_problem(row["start"], row["end"], info.duration)):
        return None, Problem(clip, "span_past_end", f"{file}: {why}")
    box, res = row["crop_box"], row["resolution"]
    if box and res and info is None:
        extra["crop_hint"] = crop_hint(box, "pixels", (None, res), f"{row['subset']}_crop_wh.txt, unscaled")
    elif box and res:
        scale = info.height / res      # the file may not be the height the authors downloaded
        px = [v * scale for v in box]
        if why := box_problem(px, info.width, info.height):
            problem = Problem(clip, "crop_outside", f"{file}: {why} (scaled {res}->{info.height} px): "
                              "built without a crop hint", True)
        else:
            extra["crop_hint"] = crop_hint([px[0] / info.width, px[1] / info.height, px[2] / info.width,
                                            px[3] / info.height], "normalised", (info.width, info.height),
                                           f"{row['subset']}_crop_wh.txt scaled {res}->{info.height} px")
    return VideoSpec("hdtf", clip, str(path), start=row["start"], end=row["end"], extra=extra), problem
