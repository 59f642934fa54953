"""Source adapter `celebv-text`: the clip info JSON, the six text folders, and the clips or source videos.

--root is a folder or an object-store prefix (s3://bucket/celebv-text: one listing; the build's workers download
their own clips). Metadata under --root (up to 3 folders deep):
  celebvtext_info.json   flat {"<ytb_id>_<k>_<j>.mp4": {ytb_id, meta_video_names, duration: {start_sec, end_sec},
                         bbox: {top, bottom, left, right} 0..1, version}}, or the older {"clips_set1": {"<clip>":
                         {...}}, "clips_set2": ...} whose bbox may be in pixels
  <attribute>/<clip>.txt one file per clip per attribute, a description a line: action_dur (the prompts), emotion,
                         face40_details_new, light_dir, light_intensity, light_color_temp (or its misspelling colot)
Media, by file name anywhere under --root: <clip>.mp4 (+ <clip>.m4a), a clip of the authors' mirror (whole file);
<ytb_id>.mp4, a source video (the annotated span, the bbox as a crop hint). `download=True` fetches missing source
videos into <root>/downloaded_celebvtext/raw/ (yt-dlp, or the `downloader` given) and records unavailable ids.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

from .. import storage
from ..schema import VideoSpec
from ..splits import split_of
from .base import (AUDIO_SUFFIXES, VIDEO_SUFFIXES, Problem, SourceError, SourceScan, Tree, box_problem, crop_hint,
                   span_problem)

TEXT_FOLDERS = {"action": ("action_dur",), "emotion": ("emotion",),
                "appearance": ("face40_details_new", "face40_details"), "light_direction": ("light_dir",),
                "light_intensity": ("light_intensity",), "light_color_temp": ("light_color_temp", "light_colot_temp")}
PROMPT_ATTRIBUTE = "action"                 # PoseTalk's motion prompts: the action descriptions
DOWNLOAD_DIR = Path("downloaded_celebvtext") / "raw"
SET_KEY = re.compile(r"^clips(_set\d+)?$")
KEY_OPENING = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*\{')
Downloader = Callable[[str, Path], Optional[Path]]


def read_text(path) -> str:
    """A metadata file's text (a path or URL): a BOM dropped, undecodable bytes replaced."""
    return storage.read_bytes(path).decode("utf-8-sig", errors="replace")


def load_info(path) -> tuple[list[tuple[str, str | None, Any]], list[Problem], list[str]]:
    """(clip key, set name, entry) in file order; a broken file is read entry by entry so one bad entry costs one
    clip."""
    text, name = read_text(path), storage.name(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        entries, problems = _salvage(text, name)
        return entries, problems, [f"{name}: invalid JSON at line {err.lineno} ({err.msg}); read entry by entry"]
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a JSON object of clips, found {type(data).__name__}")
    if any(SET_KEY.match(k) for k in data):      # the older {"clips_set1": {...}, "clips_set2": {...}} form
        return [(k, s, v) for s, clips in data.items() if SET_KEY.match(s) and isinstance(clips, dict)
                for k, v in clips.items()], [], [f"{name}: older form, sets {', '.join(data)}"]
    return [(k, None, v) for k, v in data.items()], [], []


def _salvage(text: str, name: str) -> tuple[list[tuple[str, str | None, Any]], list[Problem]]:
    decoder, entries, problems, current_set = json.JSONDecoder(), [], [], None
    for m in KEY_OPENING.finditer(text):
        key = m.group(1)
        if key in ("duration", "bbox"):     # objects inside an entry
            continue
        if SET_KEY.match(key):
            current_set = key
            continue
        try:
            entry, _ = decoder.raw_decode(text, m.end() - 1)
        except json.JSONDecodeError as err:
            line = text.count("\n", 0, err.pos) + 1
            problems.append(Problem(key.removesuffix(".mp4"), "broken_json", f"{name} line {line}: {err.msg}; "
                                    "the entry cannot be read"))
            continue
        if any(isinstance(v, dict) and "ytb_id" in v for v in entry.values()):   # ran into the next entry
            problems.append(Problem(key.removesuffix(".mp4"), "broken_json", f"{name}: the entry is not closed "
                                    "before the next one"))
        elif "ytb_id" in entry or "duration" in entry:
            entries.append((key, current_set, entry))
    return entries, problems


def clip_row(key: str, set_name: str | None, entry: Any) -> tuple[dict | None, list[Problem]]:
    """One manifest row from an info entry, or None with the reason it cannot be used."""
    clip = key.removesuffix(".mp4")
    ytb = entry.get("ytb_id") if isinstance(entry, dict) else None
    if not isinstance(ytb, str) or not ytb:
        return None, [Problem(clip, "bad_entry", "no ytb_id in the info entry")]
    dur = entry.get("duration") if isinstance(entry.get("duration"), dict) else {}
    # The older README example names the seconds fields start_frame/end_frame (its values, 415.29, are seconds).
    start, end = dur.get("start_sec", dur.get("start_frame")), dur.get("end_sec", dur.get("end_frame"))
    if not all(isinstance(v, (int, float)) for v in (start, end)) or not 0 <= start < end:
        return None, [Problem(clip, "bad_time", f"duration {entry.get('duration')!r} is not 0 <= start < end")]
    raw_box = entry.get("bbox") if isinstance(entry.get("bbox"), dict) else {}
    box = [raw_box.get(k) for k in ("left", "top", "right", "bottom")]
    problems, units = [], None
    if not all(isinstance(v, (int, float)) for v in box):
        problems.append(Problem(clip, "no_crop", "no usable bbox: built without a crop hint", True))
        box = None
    else:
        # The current form is normalised, the older README example in pixels; a pixel box within 2 px is no face,
        # so anything up to 2 is a normalised box (and one past 1 lies outside the frame).
        units = "normalised" if max(box) <= 2.0 else "pixels"
        frame = (1.0, 1.0) if units == "normalised" else (None, float("inf"))   # pixels: the frame is unknown here
        why = box_problem(box, *frame, slack=0.0)
        if why:
            problems.append(Problem(clip, "crop_outside", f"bbox: {why}: built without a crop hint", True))
            box, units = None, None
    return {"clip_id": clip, "source": "celebv-text", "youtube_id": ytb, "identity": ytb,
            "meta_video": entry.get("meta_video_names"), "set": set_name, "version": entry.get("version"),
            "start": float(start), "end": float(end), "bbox": box, "bbox_units": units}, problems


def mark_same_spans(rows: list[dict]) -> None:
    """Clips of one meta video may share one span and box (only the meta video's span is published)."""
    first: dict[tuple, str] = {}
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        key = (row["youtube_id"], row["start"], row["end"], tuple(row["bbox"] or ()))
        row["same_span_as"] = first.get(key)
        first.setdefault(key, row["clip_id"])


def find_text_folders(tree: Tree) -> dict[str, Path | str]:
    found = {}
    for attr, names in TEXT_FOLDERS.items():
        for depth in range(4):
            hits = [p for name in names for p in tree.glob("*/" * depth + name, folders=True)]
            if hits:
                found[attr] = hits[0]
                break
    return found


def read_lines(path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def ytdlp_downloader() -> Downloader:
    """The default downloader: yt-dlp, best mp4 video + m4a audio merged into dest. A missing yt-dlp is an error."""
    exe = shutil.which("yt-dlp")
    if exe is None:
        raise SourceError("--download needs yt-dlp on PATH (pip install yt-dlp); or put the source videos under "
                          f"--root yourself as {DOWNLOAD_DIR}/<youtube id>.mp4")

    def fetch(ytb_id: str, dest: Path) -> Path | None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The full URL after "--": an id beginning with '-' is never read as an option.
        cmd = [exe, "--quiet", "--no-warnings", "-f", "bestvideo[ext=mp4]+bestaudio[ext=m4a]/bestvideo+bestaudio/best",
               "--merge-output-format", "mp4", "-o", str(dest.absolute()), "--",
               f"https://www.youtube.com/watch?v={ytb_id}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return dest if done.returncode == 0 and dest.is_file() else None
    return fetch


def scan(root, *, probe: bool = True, download: bool = False,
         downloader: Downloader | None = None) -> SourceScan:
    """`root`: a folder, or a store prefix (s3://bucket/celebv-text): listed once; a store's videos are probed by
    the worker that downloads them, not here, and --download writes into a local root only."""
    tree = Tree(root)
    if download and tree.url:
        raise SourceError(f"--download saves videos under --root, which is the URL {tree.root}; download into a "
                          "local --root, or upload the source videos to the store yourself")
    root = tree.root
    info = tree.find(["celebvtext_info.json", "celebvtext_info*.json"],
                     "CelebV-Text clip info (celebvtext_info.json from the CelebV-Text repository)")
    entries, problems, notes = load_info(info)
    rows = []
    for key, set_name, entry in entries:
        row, row_problems = clip_row(key, set_name, entry)
        rows += [row] if row else []
        problems += row_problems
    mark_same_spans(rows)
    folders = find_text_folders(tree)
    stems = {a: {n[:-4] for n in tree.names_in(f) if n.endswith(".txt")} for a, f in folders.items()}
    videos, audios = tree.media_index(VIDEO_SUFFIXES), tree.media_index(AUDIO_SUFFIXES)
    wanted = {r["youtube_id"] for r in rows if r["clip_id"] not in videos and r["youtube_id"] not in videos}
    unavailable = set(_download(root, sorted(wanted), videos, downloader) if download and wanted else [])
    used = {r["clip_id"]: videos.get(r["clip_id"], videos.get(r["youtube_id"], [None]))[0] for r in rows}
    infos = tree.probe(p for p in used.values() if p) if probe else {}
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["same_span_as"] or row["clip_id"], []).append(row["clip_id"])

    def texts(clips: list[str]) -> dict[str, list[str]]:
        # read only for the clips that get a spec: the full dataset has 70k clips x 6 files
        lines = {a: [line for c in clips if c in stems[a] for line in read_lines(storage.join(f, f"{c}.txt"))]
                 for a, f in folders.items()}
        return {a: list(dict.fromkeys(v)) for a, v in lines.items() if v}

    specs = []
    for row in rows:
        group = [row["clip_id"]] if row["clip_id"] in videos else groups[row["same_span_as"] or row["clip_id"]]
        spec, problem = _spec(row, group, videos, audios, infos, texts, unavailable)
        specs += [spec] if spec else []
        problems += [problem] if problem else []
    counts = {"clips_annotated": len(rows), "youtube_ids": len({r["youtube_id"] for r in rows}),
              "meta_videos": len({r["meta_video"] for r in rows}),
              "ids_starting_with_dash_or_underscore": len({r["youtube_id"] for r in rows
                                                           if r["youtube_id"][0] in "-_"}),
              "same_span_clips": sum(r["same_span_as"] is not None for r in rows),
              **{f"text_{a}": sum(r["clip_id"] in stems.get(a, ()) for r in rows) for a in TEXT_FOLDERS},
              "local_clip_files": sum(r["clip_id"] in videos for r in rows),
              "local_source_videos": len({r["youtube_id"] for r in rows if r["youtube_id"] in videos}),
              "unavailable_ids": len(unavailable), "specs": len(specs)}
    notes += [f"text folder {a}: {tree.rel(f)}" for a, f in folders.items()]
    if len(folders) < len(TEXT_FOLDERS):
        notes.append("no text folder " + ", ".join(" or ".join(TEXT_FOLDERS[a]) for a in TEXT_FOLDERS
                                                   if a not in folders) + " (looked up to 3 folders below --root)")
    return SourceScan("celebv-text", root, [tree.rel(info)], rows, specs, problems, counts, notes, tree.sizes())


def _download(root: Path, ids: list[str], videos: dict, downloader: Downloader | None) -> list[str]:
    fetch, dest, unavailable = downloader or ytdlp_downloader(), root / DOWNLOAD_DIR, []
    for ytb in ids:
        got = fetch(ytb, dest / f"{ytb}.mp4")
        if got is not None and Path(got).is_file():
            videos[ytb] = [Path(got)]
        else:
            unavailable.append(ytb)
    if unavailable:   # kept beside the downloads so a later run (or a person) sees which ids failed
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "unavailable.txt").write_text("".join(f"{i}\n" for i in unavailable))
    return unavailable


def _spec(row, group, videos, audios, infos, texts, unavailable) -> tuple[VideoSpec | None, Problem | None]:
    clip, ytb = row["clip_id"], row["youtube_id"]
    mirrored = clip in videos
    if not mirrored and ytb not in videos:
        if ytb in unavailable:
            return None, Problem(clip, "unavailable", f"YouTube video {ytb} could not be downloaded")
        return None, Problem(clip, "no_media", f"no local {clip}.mp4 or {ytb}.mp4 under --root (--download "
                             "fetches the source videos)")
    if not mirrored and row["same_span_as"]:
        return None, Problem(clip, "same_span", f"same source span and box as {row['same_span_as']}: built once, "
                             "under that id, with both clips' texts")
    path = videos[clip if mirrored else ytb][0]
    info = infos.get(path)
    if isinstance(info, str):
        return None, Problem(clip, "unreadable", f"{storage.name(path)}: {info}")
    merged = texts(group)
    prompts = merged.get(PROMPT_ATTRIBUTE, [])
    extra = {"dataset": "CelebV-Text", "youtube_id": ytb, "meta_video": row["meta_video"], "set": row["set"],
             "version": row["version"], "identity": ytb, "split": split_of(ytb),
             "annotated_span": [row["start"], row["end"]], "crop_hint": None, "prompts": prompts,
             "prompt_source": f"celebv-text {TEXT_FOLDERS[PROMPT_ATTRIBUTE][0]}" if prompts else None,
             "captions": {a: v for a, v in merged.items() if a != PROMPT_ATTRIBUTE},
             "clips": group}
    audio = audios.get(clip if mirrored else ytb)     # a separate audio file starts with its video
    audio_path = str(audio[0]) if audio else None
    if mirrored:   # the authors' clip: already cut and cropped
        if info is not None and abs(info.duration - (row["end"] - row["start"])) <= 0.5:
            extra["source_offset"] = row["start"]
        return VideoSpec("celebv-text", clip, str(path), audio_path=audio_path, extra=extra), None
    if info is not None and (why := span_problem(row["start"], row["end"], info.duration)):
        return None, Problem(clip, "span_past_end", f"{storage.name(path)}: {why}")
    problem, box = None, row["bbox"]
    if box and row["bbox_units"] == "pixels" and info is not None:
        if why := box_problem(box, info.width, info.height):
            problem, box = Problem(clip, "crop_outside", f"{storage.name(path)}: {why}: built without a crop hint",
                                   True), None
        else:
            box = [box[0] / info.width, box[1] / info.height, box[2] / info.width, box[3] / info.height]
    if box:
        units = "normalised" if row["bbox_units"] == "normalised" or info is not None else "pixels"
        extra["crop_hint"] = crop_hint(box, units, (info.width, info.height) if info else None, "celebvtext_info bbox")
    return VideoSpec("celebv-text", clip, str(path), audio_path, row["start"], row["end"], extra), problem

