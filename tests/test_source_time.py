"""Issue 19, scene cuts and source time: no clip spans a hard cut, fast head motion is no cut, and every second of
every source is in a clip or listed in failures.parquet with the reason (kind "span" for frames no clip holds)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posetalk_data.cli import app
from posetalk_data.config import CutsConfig
from posetalk_data.cuts import CutDetector, shots
from posetalk_data.media import probe, read_frames
from posetalk_data.tracking import face_spans

FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
FRAME = 1 / 25
TINY = ["--workers", "0", "--set", "facetrack.crop_size=64"]


def build(folder: Path, out: Path, *sets: str) -> tuple[list[dict], list[dict], str]:
    args = ["build", "--src", "folder", "--input", str(folder), "--out", str(out), *TINY]
    result = CliRunner().invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    return (pq.read_table(out / "samples.parquet").to_pylist(), pq.read_table(out / "failures.parquet").to_pylist(),
            (out / "report.html").read_text())


def accounted(rows: list[dict]) -> float:
    return sum(r["end"] - (r["start"] or 0.0) for r in rows)


def cuts_in(path: Path, cfg: CutsConfig = CutsConfig()) -> list[int]:
    detector = CutDetector(cfg)
    for i, frame in enumerate(read_frames(path, fps=25)):
        detector(i, frame)
    return detector.cuts


@pytest.fixture(scope="module")
def grid_cut(samples, tmp_path_factory) -> Path:
    """The two GRID speakers (a man, then a woman; same studio, framing, size and fps) joined with a hard cut at
    3.00 s: the face tracker alone would link their faces into one track."""
    folder = tmp_path_factory.mktemp("cut_in")
    videos = samples / "videos"
    subprocess.run([*FFMPEG, "-i", str(videos / "grid_bbaf2n.mpg"), "-i", str(videos / "grid_lbbc2a.mpg"),
                    "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(folder / "two_speakers.mp4")],
                   check=True)
    return folder


def test_shots_leave_out_the_trim_around_each_cut():
    assert shots(150, [75], 5) == ([(0, 70), (80, 150)], [(70, 80, [75])])
    assert shots(150, [75], 0) == ([(0, 75), (75, 150)], [(75, 75, [75])])      # the cut still ends a shot
    assert shots(150, [3, 10, 145], 5) == ([(15, 140)], [(0, 15, [3, 10]), (140, 150, [145])])
    assert shots(150, [], 5) == ([(0, 150)], [])


def test_face_spans_reach_the_shot_start_and_list_what_they_leave_out():
    checked = list(range(84, 300, 6))          # detection every 6th frame; the shot starts at 80 (after a trim)
    runs, lost = face_spans(checked[:10] + checked[15:], 80, 290, 6, 12)
    assert runs == [(80, 144), (174, 290)] and lost == [(144, 174)]


def test_a_cut_between_two_speakers_ends_the_clip(grid_cut, tmp_path):
    assert cuts_in(grid_cut / "two_speakers.mp4") == [75]
    rows, failures, page = build(grid_cut, tmp_path / "o")
    spans = sorted((r["start"], r["end"]) for r in rows)
    assert len(spans) == 2 and spans[0][1] <= 3.0 - 0.2 + 1e-6 and spans[1][0] >= 3.0 + 0.2 - 1e-6, spans
    (trim,) = failures
    assert (trim["kind"], trim["stage"], trim["start"], trim["end"]) == ("span", "facetrack", 2.8, 3.2)
    assert trim["reason"].startswith("scene cut (1 cut at 3.00 s")
    assert accounted(rows) + accounted(failures) == pytest.approx(6.0, abs=FRAME)
    assert "Scene cuts found: 1 in 1 video(s)" in page
    assert re.search(r"<td>facetrack</td><td>scene cut</td><td class=n>1</td><td class=n>0\.4</td>", page)


def test_fast_head_motion_in_a_tight_crop_is_no_cut(samples):
    """feifeili: a 256 px crop that follows a talking head, which jumps at frame 123. PySceneDetect's own adaptive
    default (min_content_val 15) calls that a cut; the build's threshold does not (the sample build keeps the
    clip whole: test_every_second_of_every_sample_is_kept_or_listed)."""
    clip = samples / "paired" / "styletalk_feifeili_clip1" / "feifeili_clip1.mp4"
    assert cuts_in(clip) == []
    assert cuts_in(clip, CutsConfig(min_content_val=15.0)) == [123]


def test_a_tight_256px_face_keeps_its_first_seconds(samples, tmp_path):
    """Issue 19's report: a 256 x 256 talking clip with the face in every frame lost its first seconds, with no row
    anywhere: the full-range detector misses a face that fills the frame. Now the short-range model is asked on
    those frames, the clip starts at 0; and without that retry, the lost time is at least listed."""
    folder = tmp_path / "in"
    folder.mkdir()
    subprocess.run([*FFMPEG, "-i", str(samples / "videos" / "liveportrait_d10.mp4"), "-t", "6", "-vf",
                    "crop=iw*0.6:ih*0.6,scale=256:256", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                    str(folder / "tight.mp4")], check=True)
    duration = probe(folder / "tight.mp4").duration
    roomy = "facetrack.max_padded_fraction=0.5"      # the face fills the frame: a 2x crop is partly padding
    rows, failures, _ = build(folder, tmp_path / "o", roomy)
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, pytest.approx(duration, abs=2 * FRAME))]
    assert failures == []
    rows, failures, page = build(folder, tmp_path / "before", roomy, "facetrack.retry_other_detector=false")
    assert rows and rows[0]["start"] > 0 and failures and {f["kind"] for f in failures} == {"span"}
    assert any(f["start"] is None and f["reason"].startswith("no face") for f in failures), failures
    assert accounted(rows) + accounted(failures) == pytest.approx(duration, abs=2 * FRAME)
    assert "<td>facetrack</td><td>no face</td>" in page


def test_every_second_of_every_sample_is_kept_or_listed(sample_build, sample_input):
    """Over the Ray build of every sample: per source, kept spans plus listed dropped spans (clips, whole videos,
    spans) equal its duration; no sample has a cut, so no clip is split and no time is trimmed."""
    out, result = sample_build
    rows = pq.read_table(out / "samples.parquet").to_pylist()
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    checked = 0
    for source in result.manifest["sources"]:
        mine = [r for r in rows if r["video_id"] == source["video_id"]]
        dropped = [f for f in failures if f["video_id"] == source["video_id"]]
        if any(f["end"] is None for f in dropped):     # not even probed: its length is not known to anyone
            continue
        duration = probe(sample_input / source["video_id"]).duration   # folder ids are paths in the input
        assert accounted(mine) + accounted(dropped) == pytest.approx(duration, abs=2 * FRAME), (source, dropped)
        checked += 1
    assert checked >= 12
    assert not [f for f in failures if f["reason"].startswith("scene cut")]
    fei = [r for r in rows if r["video_id"] == "paired/feifeili_clip1.mp4"]
    assert [(r["start"], r["end"]) for r in fei] == [(0.0, pytest.approx(10.07, abs=2 * FRAME))]
