"""Source adapter `mead`: the MEAD folder tree, one spec per take of the chosen camera view.

As the per-actor archives unpack (the actor folders directly under --root, or up to 2 folders below it; --root may
be an object-store prefix, s3://bucket/mead, listed once):
  <actor>/video/<view>/<emotion>/level_<n>/<nnn>.mp4    actor M003, W009...; view front, down, top, left_30, ...
  <actor>/audio/<emotion>/level_<n>/<nnn>.m4a           the take's audio, recorded separately (one for all views)
The tree is the metadata: actor, emotion and level come from the path and go into meta.json. The baseline code's
frame lists (`<actor>/<folder>/<frame>.jpg emotion_idx level_idx reference`) are read by `frame_list_clips`.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from .. import storage
from ..schema import VideoSpec
from ..splits import split_of
from .base import Problem, SourceError, SourceScan, Tree

ACTOR = re.compile(r"^[MW]\d{3}$")
LEVEL = re.compile(r"^level_(\d+)$")
TAKE = re.compile(r"^\d{3}$")
VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
# Emotion index order of the MEAD baseline code (uniBruce/Mead, trainer_demo.page2emo), as MEAD names its folders.
BASELINE_EMOTIONS = ("angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised", "neutral")


def find_actors(tree: Tree) -> list:
    """Actor folders (M003, W009, ...) holding a video/ folder, at the root or up to 2 folders below it."""
    for depth in range(3):
        actors = [storage.parent(p) for p in tree.glob("*/" * depth + "*/video", folders=True)
                  if ACTOR.match(storage.name(storage.parent(p)))]
        if actors:
            return actors
    lists = [storage.name(p) for p in tree.glob("video_list*.txt")]
    found = f" ({', '.join(lists)} here is a frame list of the MEAD baseline code, not the videos)" if lists else ""
    raise SourceError(f"no MEAD actor folders under {tree.root}: looked for <actor>/video/<view>/<emotion>/level_<n>/"
                      f"<nnn>.mp4 with <actor> like M003 or W009, at the top and up to 2 folders below it{found}")


def actor_clips(tree: Tree, actor, view: str) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Every take of one actor in `view` ("all": every view present) as rows, and the paths that do not fit."""
    name, videos = storage.name(actor), storage.join(actor, "video")
    views = sorted({r.split("/")[0] for r in tree.under(videos) if "/" in r})    # folders holding files
    chosen = views if view == "all" else [view] if view in views else []
    if not chosen:
        here = ", ".join(views) or "none"
        return [], [Problem(name, "no_view", f"no video/{view}/ folder (views here: {here})")]
    rows, problems = [], []
    for v in chosen:
        folder = storage.join(videos, v)
        for inside in sorted(r for r in tree.under(folder) if r.endswith(".mp4")):
            parts, path = PurePosixPath(inside).parts, storage.join(folder, inside)
            level = LEVEL.match(parts[1]) if len(parts) == 3 else None
            take = PurePosixPath(inside).stem
            if level is None or not TAKE.match(take):
                problems.append(Problem(f"{name}/video/{v}/{inside}", "bad_path",
                                        "not at video/<view>/<emotion>/level_<n>/<nnn>.mp4: left out"))
                continue
            emotion = parts[0]
            audio = storage.join(actor, "audio", emotion, parts[1], f"{take}.m4a")
            rows.append({"clip_id": f"{name}_{v}_{emotion}_{parts[1]}_{take}", "source": "mead",
                         "actor": name, "identity": name, "view": v, "emotion": emotion,
                         "level": int(level.group(1)), "take": take, "path": path,
                         "audio": audio if tree.has(audio) else None})
    return rows, problems


def scan(root, *, view: str = "front", probe: bool = False) -> SourceScan:
    """One whole-file spec per take under root (a folder, or a store prefix: one listing; the build's workers
    download their own takes); probe=True also ffprobes each local file and leaves out the unreadable ones."""
    if view != "all" and view not in VIEWS:
        raise SourceError(f"unknown MEAD view {view!r}; choose one of {', '.join(VIEWS)} or all")
    tree = Tree(root)
    rows, problems = [], []
    for actor in find_actors(tree):
        actor_rows, actor_problems = actor_clips(tree, actor, view)
        rows += actor_rows
        problems += actor_problems
    infos = tree.probe(r["path"] for r in rows) if probe else {}
    specs = []
    for row in rows:
        if isinstance(infos.get(row["path"]), str):
            problems.append(Problem(row["clip_id"], "unreadable", f"{storage.name(row['path'])}: "
                                    f"{infos[row['path']]}"))
            continue
        if row["audio"] is None:
            problems.append(Problem(row["clip_id"], "no_audio_file", f"no audio/{row['emotion']}/level_"
                                    f"{row['level']}/{row['take']}.m4a: the video's own track is used", True))
        extra = {"dataset": "MEAD", "actor": row["actor"], "identity": row["actor"], "split": split_of(row["actor"]),
                 "emotion": row["emotion"], "level": row["level"], "view": row["view"], "take": row["take"]}
        specs.append(VideoSpec("mead", row["clip_id"], str(row["path"]),
                               audio_path=str(row["audio"]) if row["audio"] else None, extra=extra))
    for row in rows:    # manifest rows carry paths relative to the root, never this machine's
        row["path"] = tree.rel(row["path"])
        row["audio"] = tree.rel(row["audio"]) if row["audio"] else None
    counts = {"actors": len({r["actor"] for r in rows}), "clips_annotated": len(rows),
              "emotions": len({r["emotion"] for r in rows}), "levels": len({r["level"] for r in rows}),
              "views": len({r["view"] for r in rows}), "with_audio_file": sum(r["audio"] is not None for r in rows),
              "specs": len(specs)}
    return SourceScan("mead", tree.root, [], rows, specs, problems, counts,
                      [f"view: {view}", "metadata: the folder tree (actor/video/view/emotion/level_n/nnn.mp4)"],
                      sizes=tree.sizes())


def frame_list_clips(path: Path) -> list[dict[str, Any]]:
    """Clips of a MEAD baseline frame list, one per frame folder: actor, emotion, level, frame count, reference."""
    clips: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit() or fields[0].count("/") != 2:
            raise SourceError(f"{path.name} line {number}: expected `<actor>/<folder>/<frame>.jpg emotion_idx "
                              f"level_idx reference_frame`, found {line!r}")
        actor, folder, _ = fields[0].split("/")
        emotion_idx = int(fields[1])
        if emotion_idx >= len(BASELINE_EMOTIONS):
            raise SourceError(f"{path.name} line {number}: emotion index {emotion_idx} is not 0..7")
        clip = clips.setdefault(folder, {
            "clip_id": folder, "source": "mead", "actor": actor, "identity": actor,
            "emotion": BASELINE_EMOTIONS[emotion_idx], "emotion_idx": emotion_idx, "level": int(fields[2]) + 1,
            "frames": 0, "reference_frame": fields[3], "list_file": path.name})
        clip["frames"] += 1
    return sorted(clips.values(), key=lambda c: c["clip_id"])
