"""The build report: one self-contained HTML file whose figures render in a real (headless) browser."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posetalk_data.cli import app
from posetalk_data.report import write_report

SECTIONS = ("summary", "drops", "source-time", "clip-lengths", "pose", "gaze", "av-sync", "flags",
            "throughput", "versions", "thumbnails")
FIGURES = ("fig-clip-length", "fig-pose", "fig-gaze", "fig-gaze-consistency", "fig-av-sync", "fig-throughput",
           "fig-thumbnails")
TIMINGS = {"probe": 0.3, "normalise": 0.2, "facetrack": 1.9, "landmarks": 1.7, "headpose": 1.1, "quality": 0.2,
           "encode": 0.2, "frames": 150, "wall_seconds": 6.0}


@pytest.fixture(scope="module")
def report(samples, tmp_path_factory):
    """Two GRID clips (small crops, so it is quick) and a text file named .mp4, which probe drops."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "in"
    root.mkdir()
    for name in ("grid_bbaf2n.mpg", "grid_lbbc2a.mpg"):
        (root / name).symlink_to(samples / "videos" / name)
    (root / "x.mp4").write_text("not a video\n")
    out = tmp / "out"
    result = CliRunner().invoke(app, ["build", "--src", "folder", "--input", str(root), "--out", str(out),
                                      "--workers", "0", "--set", "facetrack.crop_size=128"])
    assert result.exit_code == 0, result.output
    built = (out / "report.html").read_text(encoding="utf-8")   # every build writes its report
    assert "<td>facetrack</td>" in built and "not recorded" not in built   # with this run's timings.json
    path = write_report(out, timings=TIMINGS)
    return out, path, path.read_text(encoding="utf-8")


def test_report_is_self_contained_and_has_every_section(report):
    out, path, page = report
    assert path == out / "report.html"
    assert not re.search(r"https?://|<link\b|@import|url\(", page, re.I), "the report must not fetch anything"
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    for fid in FIGURES:
        assert f'id="{fid}"' in page, fid
    assert len(re.findall(r'<figure id="thumb-\d+"><img alt="Middle frame of ', page)) == 2
    # the drop reason from failures.parquet, and every flag of samples.parquet, are shown
    assert "<td>probe</td><td>unreadable video: ffprobe cannot read it</td><td class=n>1</td>" in page
    for flag in {f for row in pq.read_table(out / "samples.parquet").to_pylist() for f in row["flags"]}:
        assert f"<td>{flag}</td>" in page
    assert "<td>facetrack</td><td class=n>1.9</td>" in page and "not recorded" not in page
    # source time: the two GRID clips are kept whole; the text file has no length anyone could read
    assert "<td>kept in clips</td><td class=n></td><td class=n>6.0</td><td class=n>100.0%</td>" in page
    assert "Scene cuts found: 0 in 0 video(s)" in page and "1 dropped video(s) of unknown length" in page
    # every inlined image decodes to something that is not a flat colour
    images = re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', page)
    assert len(images) == 8   # clip length, pose, gaze, gaze consistency, audio offset, throughput, 2 thumbnails
    for data in images:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) >= 100 and img.std() > 10


def test_report_without_timings_says_not_recorded(report, tmp_path):
    out, _, _ = report
    page = write_report(tmp_path, manifest_path=out / "manifest.json", timings={}).read_text()
    assert "Throughput: not recorded" in page and 'id="fig-thumbnails"' in page


def _chromium(*args: str, profile) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    # No network, no background services, own profile: the page must render from the file alone.
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--disable-quic", "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium is not on PATH (CI installs Debian's chromium: apt-get install -y chromium)")
def test_report_renders_its_figures_in_headless_chromium(report, tmp_path):
    _, path, page = report
    dom = _chromium("--dump-dom", path.as_uri(), profile=tmp_path / "p1")
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    # the report's inline script marks <body> once every <img> has decoded with a non-zero width
    n_images = len(re.findall(r"<img\b", page))
    assert f'data-images="{n_images}"' in body.group(0) and 'data-rendered="ok"' in body.group(0), body.group(0)
    shot = tmp_path / "report.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri(), profile=tmp_path / "p2")
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None, run.stderr[-2000:]
    assert img.shape == (3000, 1200, 3) and img.std() > 20, "blank screenshot"
    # the page's text and tables are grey; colour on screen comes from the histograms and thumbnails
    saturated = (cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1] > 80).mean()
    assert saturated > 0.01, f"no figures on screen ({saturated:.2%} coloured pixels)"


def test_report_command_rewrites_the_report(report, tmp_path):
    out, _, _ = report
    result = CliRunner().invoke(app, ["report", "--manifest", str(out / "manifest.json"), "--out", str(tmp_path),
                                      "--thumbnails", "1"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r'<figure id="thumb-\d+">', (tmp_path / "report.html").read_text())) == 1


def test_figures_are_drawn_once_with_every_label_inside(monkeypatch):
    """Fixed margins, not bbox_inches="tight" (which draws each figure twice to measure it): one drawing a figure,
    and still every title, label and tick label inside the image, for the widest labels the report draws."""
    import posetalk_data.report as report_module
    import posetalk_data.report_render as render

    drawn, original = [], render.png

    def outside(fig, renderer) -> list[float]:
        """How far (inches) what was drawn reaches past each edge of the image: the box bbox_inches="tight" uses."""
        drawn, (width, height) = fig.get_tightbbox(renderer), fig.get_size_inches()
        return [round(d, 2) for d in (-drawn.x0, -drawn.y0, drawn.x1 - width, drawn.y1 - height) if d > 0.01]

    def counted(fig, **kw):
        draws = []
        fig.canvas.mpl_connect("draw_event", lambda event: draws.append(outside(fig, event.renderer)))
        data = original(fig, **kw)
        drawn.append(draws)
        return data

    monkeypatch.setattr(render, "png", counted)
    rng = np.random.default_rng(0)
    samples = [{"duration": d, "gaze_lr_yaw_r": r, "gaze_yaw_range": 40 * r, "gaze_vergence_offset": -12.5 * r,
                "gaze_mouth_r": 0.1} for d, r in zip(rng.uniform(2, 20, 50), rng.uniform(-0.3, 1, 50))]
    clips = {"a": {"pose": rng.normal(0, 30, (500, 6)), "gaze": rng.normal(0, 20, (500, 4))}}
    report_module._throughput({**TIMINGS, "text_embedding_long_name": 0.5})
    report_module._gaze(clips, samples)
    report_module._lengths(samples)
    report_module._pose(clips)
    assert len(drawn) == 5
    for draws in drawn:
        assert len(draws) == 1 and draws[0] == [], draws     # one drawing, nothing cut off
