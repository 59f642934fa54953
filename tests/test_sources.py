"""Dataset source adapters: the real metadata in ../shared/metadata parses with the quirks it really has, dataset-shaped
trees of real sample clips become the specs their metadata describes, and malformed metadata costs one clip each."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import link   # the `samples` fixture comes from conftest too
from posetalk_data.schema import sample_key
from posetalk_data.sources import celebv_text, hdtf, mead
from posetalk_data.sources.base import SourceError
from posetalk_data.splits import split_of
from posetalk_data.sources.inspect import inspect_source, render_inspection

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
METADATA = SHARED / "metadata"
VIDEO_512 = "videos/sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"   # 512x512, 8.06 s
VIDEO_15S = "videos/liveportrait_d10.mp4"                            # 512x512, 14.98 s
VIDEO_7S = "videos/liveportrait_d20.mp4"                             # 480x480, 7.01 s


@pytest.fixture(scope="module")
def metadata() -> Path:
    if not METADATA.is_dir():
        pytest.skip(f"real dataset metadata not found at {METADATA} (the shared folder beside the repo)")
    return METADATA


def kinds(scan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in scan.problems:
        out.setdefault(p.kind, set()).add(p.id)
    return out


# ---------------------------------------------------------------- the real metadata

def test_hdtf_real_metadata_counts_and_quirks(metadata):
    scan = hdtf.scan(metadata / "hdtf", probe=False)
    assert scan.counts["clips_annotated"] == 436
    assert (scan.counts["clips_RD"], scan.counts["clips_WDA"], scan.counts["clips_WRA"]) == (66, 195, 175)
    assert scan.counts["videos_with_intervals"] == 369 and scan.counts["videos_without_intervals"] == 1
    assert scan.counts["clips_with_crop"] == 418 and scan.counts["identities"] == 276
    assert len(scan.metadata) == 15 and scan.specs == []
    assert set(scan.notes) == {"WDA_video_url.txt: UTF-8 byte-order mark", "WDA_video_url.txt: no final newline",
                               "WDA_annotion_time.txt: no final newline", "WRA_video_url.txt: no final newline",
                               "WRA_annotion_time.txt: trailing spaces on 7 line(s)"}
    found = kinds(scan)
    assert found["no_intervals"] == {"RD_Radio24"}                 # a video with a url but no intervals
    assert found["bad_resolution"] == {"WRA_KevinMcCarthy1"}       # resolution 0
    assert found["no_crop"] == {"RD_Radio15_000", "RD_Radio6_000", "WDA_ByronDorgan0_000", "WDA_DeanPhillips_000",
                                "WDA_JeffMerkley0_000", "WDA_JimMcGovern1_000", "WDA_JimMcGovern_000",
                                "WDA_LindaSnchez_000", "WRA_BillCassidy_000", "WRA_CandiceMiller_000",
                                "WRA_DuncanHunter_001", "WRA_JaimeHerreraBeutler_000", "WRA_KevinBrady0_000",
                                "WRA_MittRomney_001", "WRA_RudyGiuliani_000"}
    assert found["crop_outside"] == {"WDA_MaggieHassan_000", "WDA_MazieHirono1_000", "WRA_PeterKing_000"}
    assert found["overlap"] == {"WRA_MittRomney_001"}             # 08:10-08:30 then 00:33-08:53
    assert len(found["no_media"]) == 436
    assert all(p.kept for p in scan.problems if p.kind in ("no_crop", "crop_outside", "overlap", "bad_resolution"))
    rows = {r["clip_id"]: r for r in scan.clips}
    # the BOM is not part of the first name; trailing spaces add no empty interval; &t=6s is not part of the id
    assert rows["WDA_CarolynMaloney2_000"]["youtube_id"] == "RApGxN-O9Qc"
    assert rows["WRA_AdamKinzinger2_002"]["start"] == 210.0 and "WRA_AdamKinzinger2_003" not in rows
    assert rows["RD_Radio2_000"]["youtube_id"] == "uBWJJvynXpA"
    assert sum(r["video"] == "Radio34" for r in scan.clips) == 10
    assert rows["RD_Radio11_001"]["start"] == 90.0 and rows["RD_Radio11_001"]["end"] == 150.0
    assert rows["WDA_AdamSchiff_000"]["crop_box"] == [608.0, 0.0, 608.0 + 726, 726.0]   # x w y h -> l t r b
    assert rows["WRA_AdamKinzinger1_000"]["identity"] == "AdamKinzinger"
    assert rows["RD_Radio11_000"]["identity"] == "Radio11"


def test_celebv_text_real_metadata(metadata):
    scan = celebv_text.scan(metadata / "celebv-text", probe=False)
    c = scan.counts
    assert (c["clips_annotated"], c["youtube_ids"], c["meta_videos"]) == (43, 42, 42)
    assert c["ids_starting_with_dash_or_underscore"] == 2 and c["same_span_clips"] == 1
    rows = {r["clip_id"]: r for r in scan.clips}
    assert rows["-lPQTvZIogI_181_1"]["youtube_id"] == "-lPQTvZIogI"
    assert rows["_idrgEM8LWU_39_0"]["identity"] == "_idrgEM8LWU"
    assert rows["OmY_hllhTz0_2_1"]["youtube_id"] == "OmY_hllhTz0"      # '_' inside an id: never split on it
    assert rows["oC9r-CTbToE_0_1"]["same_span_as"] == "oC9r-CTbToE_0_0"
    assert (rows["oC9r-CTbToE_0_0"]["start"], rows["oC9r-CTbToE_0_0"]["end"]) == (58.07, 76.27)
    assert rows["oC9r-CTbToE_0_0"]["bbox"] == [0.2, 0.0, 0.775, 0.9369]      # left, top, right, bottom
    assert all(r["bbox_units"] == "normalised" and r["version"] == "v0.11" and r["set"] is None
               for r in scan.clips)
    assert {p.kind for p in scan.problems} == {"no_media"}
    assert any("no text folder" in n for n in scan.notes)


def test_mead_baseline_frame_list(metadata):
    clips = mead.frame_list_clips(metadata / "mead" / "video_list_test.txt")
    assert [(c["clip_id"], c["frames"]) for c in clips] == [
        ("W003_73_1_output_01", 203), ("W003_73_1_output_02", 126), ("W003_73_1_output_03", 192)]
    assert {(c["actor"], c["emotion"], c["level"]) for c in clips} == {("W003", "neutral", 1)}
    with pytest.raises(SourceError, match="frame list of the MEAD baseline"):
        mead.scan(metadata / "mead")


@pytest.mark.parametrize("adapter, looked_for", [(hdtf, "_video_url.txt"), (celebv_text, "celebvtext_info.json"),
                                                 (mead, "level_<n>")])
def test_no_metadata_says_what_was_looked_for(tmp_path, adapter, looked_for):
    (tmp_path / "some" / "thing").mkdir(parents=True)
    with pytest.raises(SourceError, match=looked_for):
        adapter.scan(tmp_path)


# ---------------------------------------------------------------- dataset-shaped trees of real clips

def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.fixture
def hdtf_tree(tmp_path, samples) -> Path:
    meta = tmp_path / "HDTF_dataset"
    write(meta / "WDA_video_url.txt", b"\xef\xbb\xbfAlexandriaOcasioCortez https://www.youtube.com/watch?v=AOC&t=3s"
          b"\nJoeNeguse https://www.youtube.com/watch?v=JN\nCarolynMaloney1 https://www.youtube.com/watch?v=CM")
    write(meta / "WDA_resolution.txt", "AlexandriaOcasioCortez.mp4 1024\nJoeNeguse.mp4 512\nCarolynMaloney1.mp4 720\n")
    write(meta / "WDA_annotion_time.txt", "AlexandriaOcasioCortez.mp4 00:00-00:04 00:04-00:08 00:05-00:30 \n"
          "JoeNeguse.mp4 00:01-00:06 00:07-0x:09\nCarolynMaloney1.mp4 00:10-00:24")
    write(meta / "WDA_crop_wh.txt", "AlexandriaOcasioCortez_0.mp4 256 512 0 512\n"
          "AlexandriaOcasioCortez_2.mp4 0 64 0 64\nJoeNeguse_0.mp4 400 300 0 300\n"
          "CarolynMaloney1_0.mp4 100 200 0 200\n")
    write(meta / "WDA_crop_ratio.txt", "AlexandriaOcasioCortez_0.mp4 1.2\n")
    link(samples / VIDEO_512, tmp_path / "_videos_raw" / "WDA_AlexandriaOcasioCortez.mp4")   # full video
    link(samples / VIDEO_15S, tmp_path / "videos" / "JoeNeguse.mp4")                          # full, bare name
    link(samples / VIDEO_15S, tmp_path / "clips" / "WDA_CarolynMaloney1_000.mp4")             # cut by download.py
    return tmp_path


def test_hdtf_tree_spans_scaled_crops_and_reasons(hdtf_tree):
    scan = hdtf.scan(hdtf_tree)
    specs = {s.video_id: s for s in scan.specs}
    assert sorted(specs) == ["WDA_AlexandriaOcasioCortez_000", "WDA_AlexandriaOcasioCortez_001",
                             "WDA_CarolynMaloney1_000", "WDA_JoeNeguse_000"]
    first = specs["WDA_AlexandriaOcasioCortez_000"]
    assert (first.source, first.start, first.end) == ("hdtf", 0.0, 4.0)
    # crop 256 512 0 512 at the declared 1024 px, the file is 512 px high: scaled by 0.5, normalised to 512x512
    assert first.extra["crop_hint"]["box"] == [0.25, 0.0, 0.75, 0.5]
    assert first.extra["crop_hint"]["units"] == "normalised" and first.extra["crop_hint"]["frame"] == [512, 512]
    assert first.extra["youtube_id"] == "AOC" and first.extra["crop_ratio"] == 1.2
    assert first.extra["identity"] == "AlexandriaOcasioCortez" and first.extra["split"] in ("train", "val", "test")
    assert sample_key(first.source, first.video_id, first.start, first.end).startswith(
        "hdtf_WDA_AlexandriaOcasioCortez_000_00000000_00004000_")
    assert specs["WDA_AlexandriaOcasioCortez_001"].extra["crop_hint"] is None     # no crop line: kept, no hint
    cut = specs["WDA_CarolynMaloney1_000"]
    assert (cut.start, cut.end, cut.extra["source_offset"]) == (None, None, 10.0)
    assert specs["WDA_JoeNeguse_000"].extra["crop_hint"] is None
    found = {p.id: p for p in scan.problems}
    assert found["WDA_AlexandriaOcasioCortez_002"].kind == "span_past_end" and not found[
        "WDA_AlexandriaOcasioCortez_002"].kept
    assert "past the video's end (8.06 s)" in found["WDA_AlexandriaOcasioCortez_002"].reason
    assert found["WDA_JoeNeguse_000"].kind == "crop_outside" and found["WDA_JoeNeguse_000"].kept
    assert found["WDA_JoeNeguse_001"].kind == "bad_time" and "0x:09" in found["WDA_JoeNeguse_001"].reason
    assert found["WDA_AlexandriaOcasioCortez_001"].kind == "no_crop"
    assert "RD_video_url.txt: missing" in scan.notes and "WDA_video_url.txt: UTF-8 byte-order mark" in scan.notes
    assert len(scan.metadata) == 5


def test_hdtf_tree_without_probe_keeps_metadata_pixels(hdtf_tree):
    scan = hdtf.scan(hdtf_tree, probe=False)
    first = next(s for s in scan.specs if s.video_id == "WDA_AlexandriaOcasioCortez_000")
    assert first.extra["crop_hint"] == {"box": [256.0, 0.0, 768.0, 512.0], "units": "pixels", "frame": [None, 1024],
                                        "origin": "WDA_crop_wh.txt, unscaled"}
    assert "WDA_AlexandriaOcasioCortez_002" in {s.video_id for s in scan.specs}   # left to the probe stage


def celebv_entry(ytb: str, k: int, start: float, end: float, box=(0.1, 0.0, 0.6, 0.8)) -> dict:
    return {"meta_video_names": f"{ytb}_{k}", "ytb_id": ytb, "duration": {"start_sec": start, "end_sec": end},
            "bbox": dict(zip(("left", "top", "right", "bottom"), box)), "version": "v0.11"}


@pytest.fixture(scope="module")
def m4a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audio") / "tone.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=1",
                    "-c:a", "aac", str(out)], check=True)
    return out


@pytest.fixture
def celebv_tree(tmp_path, samples, m4a) -> Path:
    info = {"-xYzAbc_123_4_0.mp4": celebv_entry("-xYzAbc_123", 4, 1.0, 5.0),
            "-xYzAbc_123_4_1.mp4": celebv_entry("-xYzAbc_123", 4, 1.0, 5.0),        # same meta video, same span
            "-xYzAbc_123_5_0.mp4": celebv_entry("-xYzAbc_123", 5, 9.0, 30.0),       # past the 15 s video
            "Ab_cdEFgh12_3_0.mp4": celebv_entry("Ab_cdEFgh12", 3, 100.0, 107.0),    # mirrored clip, 7.01 s
            "_noMedia000_1_0.mp4": celebv_entry("_noMedia000", 1, 0.0, 6.0)}
    write(tmp_path / "celebvtext_info.json", json.dumps(info, indent=2))
    link(samples / VIDEO_15S, tmp_path / "downloaded_celebvtext" / "raw" / "-xYzAbc_123.mp4")
    link(samples / VIDEO_7S, tmp_path / "videos" / "celebvtext_6" / "Ab_cdEFgh12_3_0.mp4")
    link(m4a, tmp_path / "audio" / "Ab_cdEFgh12_3_0.m4a")
    texts = tmp_path / "texts"
    write(texts / "action_dur" / "-xYzAbc_123_4_0.txt", "He nods.\nHe turns his head to the left.\n")
    write(texts / "action_dur" / "-xYzAbc_123_4_1.txt", "He nods.\nHe shakes his head.\n")
    write(texts / "emotion" / "-xYzAbc_123_4_0.txt", "He looks happy.\n")
    write(texts / "light_colot_temp" / "Ab_cdEFgh12_3_0.txt", "\ufeffThe light is warm.\n")   # the shipped typo
    write(texts / "action_dur" / "Ab_cdEFgh12_3_0.txt", "She talks.\n")
    return tmp_path


def test_celebv_text_tree_specs_prompts_audio(celebv_tree):
    scan = celebv_text.scan(celebv_tree)
    specs = {s.video_id: s for s in scan.specs}
    assert sorted(specs) == ["-xYzAbc_123_4_0", "Ab_cdEFgh12_3_0"]
    raw = specs["-xYzAbc_123_4_0"]
    assert (raw.start, raw.end, raw.audio_path) == (1.0, 5.0, None)
    assert raw.extra["prompts"] == ["He nods.", "He turns his head to the left.", "He shakes his head."]
    assert raw.extra["prompt_source"] == "celebv-text action_dur"
    assert raw.extra["captions"] == {"emotion": ["He looks happy."]}
    assert raw.extra["clips"] == ["-xYzAbc_123_4_0", "-xYzAbc_123_4_1"]
    assert raw.extra["crop_hint"]["box"] == [0.1, 0.0, 0.6, 0.8] and raw.extra["crop_hint"]["units"] == "normalised"
    assert raw.extra["identity"] == "-xYzAbc_123" and raw.extra["split"] == split_of("-xYzAbc_123")
    assert sample_key(raw.source, raw.video_id, raw.start, raw.end).startswith(
        "celebv-text_xYzAbc_123_4_0_00001000_00005000_")
    mirrored = specs["Ab_cdEFgh12_3_0"]
    assert (mirrored.start, mirrored.end) == (None, None) and mirrored.extra["source_offset"] == 100.0
    assert mirrored.audio_path.endswith("audio/Ab_cdEFgh12_3_0.m4a")
    assert mirrored.extra["captions"] == {"light_color_temp": ["The light is warm."]}
    assert mirrored.extra["prompts"] == ["She talks."]
    found = {p.id: p for p in scan.problems}
    assert found["-xYzAbc_123_4_1"].kind == "same_span" and "-xYzAbc_123_4_0" in found["-xYzAbc_123_4_1"].reason
    assert found["-xYzAbc_123_5_0"].kind == "span_past_end"
    assert found["_noMedia000_1_0"].kind == "no_media"
    assert scan.counts["text_action"] == 3 and scan.counts["local_source_videos"] == 1


def test_celebv_text_older_sets_form(tmp_path, samples):
    # Reconstructed from the CelebV-Text README's older JSON example (no stored copy of that file exists): clip keys
    # without .mp4 inside "clips_set1"/"clips_set2", bboxes in pixels, and one entry whose seconds fields are named
    # start_frame/end_frame as in that README example.
    old = {"clips_set1": {"0-5BrmyFsYM_0": {"ytb_id": "0-5BrmyFsYM", "duration": {"start_sec": 0.0, "end_sec": 9.64},
                                            "bbox": {"top": 0, "bottom": 400, "left": 100, "right": 500},
                                            "version": "v0.1"}},
           "clips_set2": {"0-5BrmyFsYM_7": {"ytb_id": "0-5BrmyFsYM",
                                            "duration": {"start_frame": 10.29, "end_frame": 14.88},
                                            "bbox": {"top": 0, "bottom": 1183, "left": 665, "right": 1956},
                                            "version": "v0.1"}}}
    write(tmp_path / "meta" / "celebvtext_info.json", json.dumps(old, indent=4))
    link(samples / VIDEO_15S, tmp_path / "raw" / "0-5BrmyFsYM.mp4")
    scan = celebv_text.scan(tmp_path)
    assert [(r["clip_id"], r["set"], r["bbox_units"]) for r in scan.clips] == [
        ("0-5BrmyFsYM_0", "clips_set1", "pixels"), ("0-5BrmyFsYM_7", "clips_set2", "pixels")]
    specs = {s.video_id: s for s in scan.specs}
    assert specs["0-5BrmyFsYM_0"].extra["crop_hint"]["box"] == pytest.approx([100 / 512, 0, 500 / 512, 400 / 512],
                                                                            abs=1e-4)
    assert (specs["0-5BrmyFsYM_7"].start, specs["0-5BrmyFsYM_7"].end) == (10.29, 14.88)
    assert specs["0-5BrmyFsYM_7"].extra["crop_hint"] is None                    # 1956 px wide in a 512 px frame
    assert {(p.id, p.kind, p.kept) for p in scan.problems} == {("0-5BrmyFsYM_7", "crop_outside", True)}


def test_celebv_text_broken_json_line_costs_one_clip(tmp_path):
    info = {f"vid{i:08d}_0_0.mp4": celebv_entry(f"vid{i:08d}", 0, 1.0, 4.0) for i in range(4)}
    text = json.dumps(info, indent=2).replace('"end_sec": 4.0', '"end_sec": 4.0,,', 1)   # vid00000000 broken
    text = text.replace('"right": 0.6', '"right": 1.6', 1 + 1)                          # vid00000001 crop outside
    write(tmp_path / "celebvtext_info.json", text)
    scan = celebv_text.scan(tmp_path, probe=False)
    assert sorted(r["clip_id"] for r in scan.clips) == ["vid00000001_0_0", "vid00000002_0_0", "vid00000003_0_0"]
    found = {p.id: p for p in scan.problems if p.kind != "no_media"}
    assert found["vid00000000_0_0"].kind == "broken_json" and "line 7" in found["vid00000000_0_0"].reason
    assert found["vid00000001_0_0"].kind == "crop_outside" and found["vid00000001_0_0"].kept
    assert any("invalid JSON at line 7" in n for n in scan.notes)


def test_celebv_text_download_with_injected_downloader(tmp_path, samples):
    info = {"-dashId0001_0_0.mp4": celebv_entry("-dashId0001", 0, 1.0, 5.0),
            "gone0000001_0_0.mp4": celebv_entry("gone0000001", 0, 1.0, 5.0)}
    write(tmp_path / "celebvtext_info.json", json.dumps(info))
    calls = []

    def fake(ytb_id: str, dest: Path) -> Path | None:
        calls.append((ytb_id, dest))
        if ytb_id.startswith("gone"):
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples / VIDEO_15S, dest)
        return dest

    assert celebv_text.scan(tmp_path, downloader=fake).specs == [] and calls == []   # only behind download=True
    scan = celebv_text.scan(tmp_path, download=True, downloader=fake)
    assert calls == [(i, tmp_path / "downloaded_celebvtext" / "raw" / f"{i}.mp4") for i in ("-dashId0001",
                                                                                            "gone0000001")]
    assert [s.video_id for s in scan.specs] == ["-dashId0001_0_0"]
    assert {(p.id, p.kind) for p in scan.problems} == {("gone0000001_0_0", "unavailable")}
    assert (tmp_path / "downloaded_celebvtext" / "raw" / "unavailable.txt").read_text() == "gone0000001\n"
    assert scan.counts["unavailable_ids"] == 1


def test_celebv_text_download_without_ytdlp_is_a_clear_error(tmp_path, monkeypatch):
    write(tmp_path / "celebvtext_info.json", json.dumps({"abcdefghijk_0_0.mp4": celebv_entry("abcdefghijk", 0, 1, 2)}))
    monkeypatch.setattr(celebv_text.shutil, "which", lambda name: None)
    with pytest.raises(SourceError, match="needs yt-dlp"):
        celebv_text.scan(tmp_path, download=True, probe=False)


@pytest.fixture
def mead_tree(tmp_path, samples, m4a) -> Path:
    root = tmp_path / "MEAD"
    link(samples / VIDEO_512, root / "M003" / "video" / "front" / "angry" / "level_1" / "001.mp4")
    link(samples / VIDEO_512, root / "M003" / "video" / "left_30" / "angry" / "level_1" / "001.mp4")
    link(m4a, root / "M003" / "audio" / "angry" / "level_1" / "001.m4a")
    link(samples / VIDEO_7S, root / "W009" / "video" / "front" / "happy" / "level_3" / "002.mp4")   # no audio file
    link(samples / VIDEO_7S, root / "W009" / "video" / "front" / "happy" / "stray.mp4")
    return tmp_path


def test_mead_tree_views_emotions_levels(mead_tree):
    scan = mead.scan(mead_tree)
    specs = {s.video_id: s for s in scan.specs}
    assert sorted(specs) == ["M003_front_angry_level_1_001", "W009_front_happy_level_3_002"]
    m003 = specs["M003_front_angry_level_1_001"]
    assert m003.audio_path.endswith("M003/audio/angry/level_1/001.m4a") and (m003.start, m003.end) == (None, None)
    assert {k: m003.extra[k] for k in ("actor", "emotion", "level", "view")} == {
        "actor": "M003", "emotion": "angry", "level": 1, "view": "front"}
    assert specs["W009_front_happy_level_3_002"].audio_path is None
    found = {(p.id, p.kind, p.kept) for p in scan.problems}
    assert found == {("W009_front_happy_level_3_002", "no_audio_file", True),
                     ("W009/video/front/happy/stray.mp4", "bad_path", False)}
    side = mead.scan(mead_tree, view="left_30")
    assert [s.video_id for s in side.specs] == ["M003_left_30_angry_level_1_001"]
    assert ("W009", "no_view") in {(p.id, p.kind) for p in side.problems}
    assert len(mead.scan(mead_tree, view="all").specs) == 3
    with pytest.raises(SourceError, match="unknown MEAD view"):
        mead.scan(mead_tree, view="back")


def test_mead_actor_folders_linked_from_elsewhere_are_read(mead_tree, tmp_path_factory):
    """Actors unpacked on another disk and linked into --root (a link loop is walked once): the one listing follows
    folder links, as the folder globs before it did."""
    linked = tmp_path_factory.mktemp("linked_root")
    os.symlink(mead_tree / "MEAD" / "W009", linked / "W009")
    os.symlink(linked, mead_tree / "MEAD" / "W009" / "loop")
    scan = mead.scan(linked)
    assert [s.video_id for s in scan.specs] == ["W009_front_happy_level_3_002"]
    assert scan.clips[0]["path"] == "W009/video/front/happy/level_3/002.mp4"     # as linked, not resolved


# ---------------------------------------------------------------- inspect

def test_inspect_real_metadata_is_fast_and_says_what_it_would_do(metadata):
    started = time.perf_counter()
    report = inspect_source("hdtf", metadata / "hdtf")
    assert time.perf_counter() - started < 1.0
    assert report["counts"]["clips_annotated"] == 436
    by_kind = {(p["kind"], p["kept"]): p["count"] for p in report["problems"]}
    assert by_kind[("no_crop", True)] == 15 and by_kind[("no_media", False)] == 436
    text = render_inspection(report)
    assert "UTF-8 byte-order mark" in text and "nothing to build" in text and "RD_Radio24" in text
    json.dumps(report)     # JSON-able, for --json output
    with pytest.raises(SourceError, match="never downloads"):
        inspect_source("celebv-text", metadata / "celebv-text", download=True)
    with pytest.raises(SourceError, match="unknown dataset source"):
        inspect_source("voxceleb", metadata)


def test_inspect_tree_plan(hdtf_tree):
    report = inspect_source("hdtf", hdtf_tree, probe=True)
    plan = "\n".join(report["plan"])
    assert "process 4 videos: 3 spans cut from full videos, 1 whole clip files" in plan
    assert "leave out 2" in plan and "span_past_end: 1" in plan and "bad_time: 1" in plan


# ---------------------------------------------------------------- shipped manifests and the split

def load_script():
    path = REPO / "scripts" / "make_source_manifests.py"
    spec = importlib.util.spec_from_file_location("make_source_manifests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_manifests_match_the_metadata(metadata, tmp_path):
    written = load_script().write_manifests(metadata, tmp_path)
    for path in written:
        shipped = REPO / "manifests" / path.name
        if path.suffix == ".parquet":
            assert pq.read_table(path).equals(pq.read_table(shipped)), f"{shipped} is stale: run the script"
        else:
            assert json.loads(path.read_text()) == json.loads(shipped.read_text())
    counts = {p.name: pq.read_table(p).num_rows for p in written if p.suffix == ".parquet"}
    assert counts == {"hdtf_clips.parquet": 436, "celebv_text_clips.parquet": 43, "mead_clips.parquet": 3}


def test_splits_are_identity_disjoint_and_stable():
    for name in ("hdtf_clips", "celebv_text_clips", "mead_clips"):
        rows = pq.read_table(REPO / "manifests" / f"{name}.parquet").to_pylist()
        split_of_identity: dict[str, set[str]] = {}
        for r in rows:
            split_of_identity.setdefault(r["identity"], set()).add(r["split"])
            assert r["split"] == split_of(r["identity"])
        assert all(len(s) == 1 for s in split_of_identity.values()), name
    hdtf_rows = pq.read_table(REPO / "manifests" / "hdtf_clips.parquet").to_pylist()
    assert {r["split"] for r in hdtf_rows} == {"train", "val", "test"}
    # fixed values: a change of seed or rule would move people between splits
    assert [split_of(i) for i in ("AdamKinzinger", "Radio11", "-lPQTvZIogI", "W003")] == [
        split_of("AdamKinzinger", "posetalk-split-v1"), "train", "train", "train"]
