"""The face-tracking math (posetalk_data.tracking) on synthetic detections, and the stage's crop pass on a real clip
(the whole stage runs on real clips in test_build)."""
import subprocess

import numpy as np
import pytest

from posetalk_data.tracking import crop_track, cut_square, detect_size, link_tracks, spans


def box(x, y, s=100.0):
    return np.array([x, y, x + s, y + s], dtype=float)


def test_link_tracks_keeps_identities_through_a_gap():
    dets = []
    for f in range(40):
        frame = [] if 10 <= f < 14 else [(box(100 + f, 100), 0.9)]   # main face, 4-frame dropout
        if f % 2 == 0:
            frame.append((box(600, 50, 40), 0.6))                      # a small second face every other frame
        dets.append((f, frame))
    tracks = link_tracks(dets, max_gap=5)
    main = max(tracks, key=lambda t: t.weight)
    assert len(main.frames) == 36 and main.frames[9] == 9 and main.frames[10] == 14
    assert len(tracks) == 2   # the intermittent face stays one track too (gaps of 1 frame)


def test_link_tracks_splits_on_long_gap_and_far_jump():
    dets = [[(box(100, 100), 0.9)] for _ in range(10)] + [[] for _ in range(20)] + \
           [[(box(100, 100), 0.9)] for _ in range(10)] + [[(box(900, 500), 0.9)] for _ in range(5)]
    assert len(link_tracks(list(enumerate(dets)), max_gap=5)) == 3


def test_link_tracks_on_every_third_frame():
    dets = [(f, [(box(100 + f, 100), 0.9)]) for f in range(0, 60, 3)]
    (track,) = link_tracks(dets, max_gap=2)
    assert track.frames == list(range(0, 60, 3))


def test_spans_bridge_short_gaps_and_drop_short_runs():
    frames = list(range(0, 50)) + list(range(53, 100)) + list(range(130, 140)) + list(range(200, 260))
    assert spans(frames, max_gap=5, min_len=25) == [(0, 100), (200, 260)]


def test_crop_track_interpolates_and_smooths_without_lag():
    from posetalk_data.tracking import Track

    frames = list(range(0, 100, 2))
    centres = np.sin(np.array(frames) / 10) * 50 + 300
    track = Track(frames, [box(c - 50, 200) for c in centres], [0.9] * len(frames))
    crop = crop_track(track, 0, 99, scale=2.0, sigma=2.0)
    assert crop.shape == (99, 3)
    assert np.allclose(crop[:, 2], 200.0)
    truth = np.sin(np.arange(99) / 10) * 50 + 300
    assert np.argmax(crop[:, 0]) == np.argmax(truth)            # no lag at the peak
    assert np.abs(crop[5:-5, 0] - truth[5:-5]).max() < 3.0


def test_cut_square_pads_outside_and_reports_it():
    frame = np.full((100, 200, 3), 255, np.uint8)
    crop, outside = cut_square(frame, cx=10, cy=50, side=60, size=32)
    assert crop.shape == (32, 32, 3)
    assert abs(outside - 1 / 3) < 0.01          # x from -20 to 40: a third lies left of the frame
    assert crop[:, :10].max() == 0 and crop[:, -10:].min() == 255


def test_detect_size_keeps_aspect_and_even_sides():
    assert detect_size(720, 1280, 640) == (360, 640)
    assert detect_size(360, 288, 640) == (360, 288)


def test_crop_hint_picks_the_hinted_face_over_the_dominant_one():
    from posetalk_data.tracking import Track, hint_box, pick_track

    big = Track([0, 1, 2], [box(500, 100, 200)] * 3, [0.9] * 3)
    small = Track([0, 1, 2], [box(50, 50, 80)] * 3, [0.9] * 3)
    assert pick_track([big, small], None) is big
    hint = hint_box({"box": [0.0, 0.0, 0.2, 0.3], "units": "normalised"}, 800, 600)
    assert np.allclose(hint, [0, 0, 160, 180]) and pick_track([big, small], hint) is small
    pixels = hint_box({"box": [0, 0, 320, 360], "units": "pixels", "frame": [1600, 1200]}, 800, 600)
    assert np.allclose(pixels, [0, 0, 160, 180])
    assert pick_track([big, small], np.array([700.0, 500, 790, 590])) is big   # no overlap: the dominant one


def test_crops_stay_inside_the_frame_when_they_can():
    from posetalk_data.tracking import fit_crop

    wanted = np.array([[100, 300, 400.0],     # past the left edge of a 1280 x 720 frame: shifted right
                       [640, 360, 1000.0],    # taller than the frame: the largest square inside (720)
                       [640, 360, 1400.0]])   # a face of 700 px: 1.4 faces (980) do not fit: centred and padded
    crops, padded, scale = fit_crop(wanted, 1280, 720, crop_scale=2.0, min_scale=1.4)
    assert crops[0].tolist() == [200, 300, 400] and padded[0] == 0 and scale[0] == 2.0
    assert crops[1].tolist() == [640, 360, 720] and padded[1] == 0 and scale[1] == 1.44
    assert np.allclose(crops[2], [640, 360, 980]) and np.isclose(scale[2], 1.4)
    assert np.isclose(padded[2], 1 - 720 / 980)
    for (cx, cy, side), pad in zip(crops, padded):      # whatever is not padding lies inside the frame
        if pad == 0:
            assert side / 2 <= cx <= 1280 - side / 2 and side / 2 <= cy <= 720 - side / 2


def test_a_smooth_crop_track_stays_smooth_when_fitted():
    from posetalk_data.tracking import fit_crop

    t = np.arange(100)
    wanted = np.column_stack([60 + 40 * np.sin(t / 10), np.full(100, 240.0), np.full(100, 300.0)])
    crops, padded, _ = fit_crop(wanted, 640, 480, crop_scale=2.0, min_scale=1.4)
    assert (padded == 0).all() and np.abs(np.diff(crops[:, 0])).max() <= np.abs(np.diff(wanted[:, 0])).max() + 1e-9


def _facetrack(path, tmp_path, cache_mb: int):
    from posetalk_data.config import PipelineConfig
    from posetalk_data.pipeline import build_stages
    from posetalk_data.schema import ClipRecord, VideoSpec

    cfg = PipelineConfig(facetrack={"crop_size": 128, "frame_cache_mb": cache_mb})
    records = [ClipRecord(spec=VideoSpec("folder", path.name, str(path)), workdir=tmp_path / f"cache{cache_mb}")]
    for stage in (s for s in build_stages(cfg) if s.name in ("probe", "facetrack")):
        records = stage.process_batch(records)
    assert len(records) == 1 and records[0].ok, records[0].errors
    return records[0]


def test_crop_pass_on_cached_frames_equals_a_second_decode(samples, tmp_path, monkeypatch):
    """One decode when the video fits in frame_cache_mb; a second decode when it does not (0; 1 MB, which holds 3
    frames of this 360x288 clip; and a header that promises fewer frames than there are, so the cache fills up
    part-way and is dropped): the same crops, mesh and video bytes."""
    from posetalk_data.stages import facetrack

    path = samples / "videos" / "grid_bbaf2n.mpg"
    cached, twice, small = (_facetrack(path, tmp_path, mb) for mb in (1024, 0, 1))
    monkeypatch.setattr(facetrack, "promised_frames", lambda record: 1)
    overflow = _facetrack(path, tmp_path / "lying", 1)
    for other in (twice, small, overflow):
        np.testing.assert_array_equal(cached.arrays["crop_box"], other.arrays["crop_box"])
        np.testing.assert_array_equal(cached.arrays["mesh_raw"], other.arrays["mesh_raw"])
        assert cached.video.read_bytes() == other.video.read_bytes()
    assert len(cached.arrays["mesh_raw"]) == 75 and np.isfinite(cached.arrays["mesh_raw"]).all()


@pytest.fixture(scope="module")
def clip_720p(samples, tmp_path_factory):
    """2 s of a sample scaled up to 1280x720 (H.264), made at run time: a source larger than its crops need."""
    out = tmp_path_factory.mktemp("720p") / "hd.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(samples / "videos" / "liveportrait_d11.mp4"),
                    "-t", "2", "-vf", "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-c:v", "libx264", "-preset",
                    "ultrafast", "-crf", "20", "-an", str(out)], check=True)
    return out


def test_a_large_source_is_decoded_once_at_the_size_its_crops_need(clip_720p, tmp_path, monkeypatch):
    """50 frames of 720p are 138 MB as RGB. With a 100 MB cache they are held reduced to what a 128 px crop needs
    (one decode after a one-frame look at the face); with no cache the first pass reads the detector's small copy
    and the crop pass the full frames; a reduced copy that proves too small for a crop is decoded again at full
    size. Every way gives the same clip as the full-size cache, the landmarks within a pixel of the crop."""
    from posetalk_data.stages import facetrack

    sizes = []
    real = facetrack.video_frames
    monkeypatch.setattr(facetrack, "video_frames",
                        lambda record, size=None, **kw: (sizes.append(size), real(record, size=size, **kw))[1])
    runs = {}
    for name, mb in (("full", 1024), ("reduced", 100), ("twice", 0)):
        sizes.clear()
        runs[name] = (_facetrack(clip_720p, tmp_path / name, mb), list(sizes))
    reduce = facetrack.FaceTrackStage._reduced_size
    monkeypatch.setattr(facetrack.FaceTrackStage, "_reduced_size",       # half the size the crops need
                        lambda self, record, size: tuple(s // 4 * 2 for s in reduce(self, record, size)))
    sizes.clear()
    runs["too small"] = (_facetrack(clip_720p, tmp_path / "small", 100), list(sizes))
    assert runs["full"][1] == [None]
    assert runs["reduced"][1][0] == (640, 360) and len(runs["reduced"][1]) == 2
    assert runs["reduced"][1][1][0] < 640          # a 128 px crop of a ~300 px face needs less than the detector's
    assert runs["twice"][1] == [(640, 360), None]
    assert runs["too small"][1][2] is None and len(runs["too small"][1]) == 3
    full = runs["full"][0]
    for name in ("reduced", "twice", "too small"):
        clip = runs[name][0]
        assert len(clip.arrays["crop_box"]) == len(full.arrays["crop_box"]) == 50
        assert np.abs(clip.arrays["crop_box"] - full.arrays["crop_box"]).max() < 4, name
        px = np.linalg.norm(clip.arrays["mesh_raw"][..., :2] - full.arrays["mesh_raw"][..., :2], axis=-1) * 128
        assert np.nanmean(px) < 1.0, (name, np.nanmean(px))


def test_a_build_without_scenedetect_stops_in_one_line_before_any_work(samples, tmp_path):
    """scenedetect is installed --no-deps by `make setup`, so a plain wheel install can lack it: the preflight names
    it and the way out, before Ray starts; with cuts.detector=none the same build needs no scenedetect."""
    import sys

    hide = ("import sys\n"
            "sys.modules['scenedetect'] = None\n"       # what an absent package looks like to find_spec
            "from posetalk_data.cli import app\n"
            "app()\n")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "grid.mpg").symlink_to(samples / "videos" / "grid_lbbc2a.mpg")
    run = subprocess.run([sys.executable, "-c", hide, "build", "--src", "folder", "--input", str(folder),
                          "--out", str(tmp_path / "out"), "--profile", "offline"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "PySceneDetect" in run.stderr and "cuts.detector=none" in run.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
