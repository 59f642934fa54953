"""Build report: OUT/report.html, one static self-contained file (figures inlined as base64 images, no URLs).

Reads only what a finished build leaves behind (manifest.json, samples.parquet, failures.parquet, the shards), so
it can be written at the end of a build or later by `posetalk-data report --manifest M`. Per-frame figures read
pose.npy / gaze.npy from at most MAX_CLIPS clips, picked evenly over the sorted keys: deterministic, and bounded
for big builds. The manifest and its tables are read through posetalk_data.reading (paths checked, rows used only
through the shard entries the manifest lists), shards with its safe_samples and arrays with
np.load(allow_pickle=False): nothing is unpickled, and a member that escapes or is not a file is refused.
"""
from __future__ import annotations

import io
import json
import re
from collections import Counter, defaultdict

import numpy as np
from matplotlib.figure import Figure  # the OO API renders with Agg and keeps no global pyplot state

from . import report_render as render
from . import storage
from .accounting import source_time
from .reading import read_table, safe_samples, selection, shard_location

MAX_CLIPS = 300
TIMING_EXTRAS = ("frames", "wall_seconds", "startup_seconds")  # keys of `timings` that are not stages

# Set data-rendered on <body> once every image has decoded: a headless browser's dumped DOM then shows it.
RENDER_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-rendered', ok === imgs.length ? 'ok' : ok + '/' + imgs.length);
});
</script>"""
STYLE = """<style>
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
td.n{text-align:right}figure{margin:.5em 0}figcaption{font-size:12px;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{width:192px;margin:0}
.grid figcaption{word-break:break-all}.muted{color:#888}
</style>"""


def write_report(out_dir, *, manifest_path=None, timings: dict[str, float] | None = None,
                 max_thumbnails: int = 24):
    """Write out_dir/report.html for the build described by manifest_path (default out_dir/manifest.json).

    timings: stage -> seconds of worker time, in pipeline order, plus optional "frames" (frames processed) and
    "wall_seconds"; when None, the build's timings.json beside the manifest (same format) is used if present."""
    out_dir = storage.location(out_dir)     # a folder or a store URL, as the manifest may be
    manifest_path = storage.location(manifest_path) if manifest_path else storage.join(out_dir, "manifest.json")
    manifest, root, parts = selection(manifest_path)   # ManifestError for an unsafe or broken manifest
    samples = [r for _, rows in parts for r in rows]   # root: the manifest's folder; its paths are relative to it
    failures = read_table(manifest_path, manifest, "failures") if "failures" in manifest.get("tables", {}) else []
    if timings is None and storage.is_file(storage.join(root, "timings.json")):
        timings = storage.read_json(storage.join(root, "timings.json"))
    keys = _pick(sorted(r["key"] for r in samples), MAX_CLIPS)
    thumb_keys = set(_pick(keys, max_thumbnails))
    clips = _read_clips(root, {r["key"]: r["shard"] for r in samples}, keys, thumb_keys)
    body = [
        f"<h1>posetalk build report</h1><p class=muted>{render.escape(manifest.get('source', '?'))} build, "
        f"{render.escape(manifest.get('format', ''))} schema {render.escape(manifest.get('schema_version', '?'))}</p>",
        _summary(manifest, samples, len(clips)), _drops(failures), _source_time(samples, failures),
        _lengths(samples), _pose(clips), _gaze(clips, samples), _av_sync(samples), _flags(samples),
        _throughput(timings), _versions(manifest), _thumbnails(clips, thumb_keys, samples),
    ]
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>posetalk build report</title>{STYLE}"
            f"</head><body>{''.join(body)}{RENDER_CHECK}</body></html>")
    storage.makedirs(out_dir)
    return storage.write_atomic(storage.join(out_dir, "report.html"), page)  # never leave a half-written report


# ---------------------------------------------------------------- reading
def _pick(items: list, n: int) -> list:
    """At most n items spread evenly over the list (first and last included): deterministic sampling."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, max(n, 0)).round().astype(int)))]


def _read_clips(root, shard_of: dict[str, str], keys: list[str], thumb_keys: set[str]) -> dict[str, dict]:
    """key -> {pose, gaze[, landmarks, video.mp4, meta]} for the picked keys, opening only the shards they are in."""
    by_shard, clips = defaultdict(set), {}
    for key in keys:
        by_shard[shard_of[key]].add(key)
    for shard, wanted in sorted(by_shard.items()):
        for key, members in safe_samples(shard_location(root, shard), keys=wanted):
            clip = clips.setdefault(key, {})
            names = ("pose.npy", "gaze.npy") + (("landmarks.npy", "video.mp4", "meta.json") if key in thumb_keys else ())
            for name in (n for n in names if n in members):
                data = members[name]
                if name.endswith(".npy"):
                    clip[name[:-4]] = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
                else:
                    clip[name] = json.loads(data) if name == "meta.json" else data
    return {k: clips[k] for k in keys if "pose" in clips.get(k, {})}


# ---------------------------------------------------------------- sections
def _summary(manifest: dict, samples: list[dict], n_read: int) -> str:
    c = manifest.get("counts", {})
    size = sum(s.get("bytes", 0) for s in manifest.get("shards", []))
    rows = [["clips kept", c.get("samples", len(samples))], ["clips dropped", c.get("failures", "?")],
            ["input videos", c.get("videos", "?")], ["hours kept", f"{c.get('hours', 0):.4f}"],
            ["shards", f"{c.get('shards', '?')} ({size / 1e6:.1f} MB)"],
            ["clips read for the per-frame figures", f"{n_read} of {len(samples)}"]]
    return render.section("summary", "Summary", render.table(["", ""], rows, numeric=(1,)))


def _drops(failures: list[dict]) -> str:
    failures = [f for f in failures if f.get("kind") != "span"]   # frames no clip holds: see Source time
    if not failures:
        return render.section("drops", "Drop reasons", "<p>No clip was dropped.</p>")
    # Reasons end with per-file detail in parentheses (paths, ffmpeg output): group on the general part.
    groups = Counter((f["stage"], re.sub(r"\s*\(.*\)\s*$", "", f["reason"] or "")) for f in failures)
    example = {}
    for f in failures:
        example.setdefault((f["stage"], re.sub(r"\s*\(.*\)\s*$", "", f["reason"] or "")), f)
    rows = [[stage, reason, n, f"{example[(stage, reason)]['source_path']}: {example[(stage, reason)]['reason']}"]
            for (stage, reason), n in groups.most_common()]
    return render.section("drops", "Drop reasons",
                          render.table(["stage", "reason", "clips", "example"], rows, numeric=(2,)))


def _source_time(samples: list[dict], failures: list[dict]) -> str:
    """Every second of the sources: kept in a clip, or dropped with the reason (videos, clips and spans)."""
    t = source_time(samples, failures)
    share = (lambda s: f"{100 * s / t.total:.1f}%") if t.total > 0 else (lambda s: "-")
    rows = [["", "kept in clips", "", f"{t.kept:.1f}", share(t.kept)]]
    rows += [[stage, reason, int(n), f"{s:.1f}", share(s)]
             for (stage, reason), (n, s) in sorted(t.dropped.items(), key=lambda kv: -kv[1][1])]
    rows.append(["", "all source time", "", f"{t.total:.1f}", "100%" if t.total > 0 else "-"])
    note = (f"<p>Scene cuts found: {t.cuts} in {t.videos_cut} video(s); no clip spans a cut. "
            + (f"{t.unknown_length} dropped video(s) of unknown length are not counted. " if t.unknown_length else "")
            + "Each dropped span is a row of failures.parquet (kind <code>span</code>) with its start, end and "
              "reason.</p>")
    return render.section("source-time", "Source time kept and dropped", note + render.table(
        ["stage", "kept, or dropped because", "rows", "seconds", "share"], rows, numeric=(2, 3, 4)))


def _lengths(samples: list[dict]) -> str:
    d = np.array([r["duration"] for r in samples], dtype=np.float64)
    fig = render.histograms("fig-clip-length", "Histogram of clip lengths in seconds", [("clip length", [("", d)])],
                            "s")
    return render.section("clip-lengths", "Clip lengths", fig)


def _frames(clips: dict, name: str, cols: slice) -> np.ndarray:
    arrays = [c[name][:, cols] for c in clips.values() if name in c and c[name].ndim == 2]
    return np.concatenate(arrays) if arrays else np.zeros((0, cols.stop - cols.start), np.float32)


def _pose(clips: dict) -> str:
    p = _frames(clips, "pose", slice(0, 3))
    panels = [(n, [("", p[:, i])]) for i, n in enumerate(("yaw", "pitch", "roll"))]
    fig = render.histograms("fig-pose", "Histograms of head yaw, pitch and roll per frame", panels, "degrees")
    return render.section("pose", "Head pose (per frame)", fig)


def _gaze(clips: dict, samples: list[dict]) -> str:
    g = _frames(clips, "gaze", slice(0, 4))
    panels = [("gaze yaw", [("image-left eye", g[:, 0]), ("image-right eye", g[:, 2])]),
              ("gaze pitch", [("image-left eye", g[:, 1]), ("image-right eye", g[:, 3])])]
    fig = render.histograms("fig-gaze", "Histograms of gaze yaw and pitch per frame, each eye", panels, "degrees")
    note = ("<p>Each eye's gaze relative to the head. Consistency: the two eyes of one face turn together, so per "
            "frame their angles should lie on the diagonal, and per clip their yaw should correlate wherever gaze "
            "moves more than a few degrees. The constant left-right yaw difference removed per clip is the "
            "person's anatomy as the landmarks see it (flag gaze_offset_large above 20 degrees). Frames with a "
            "shut eye carry filled-in gaze, listed in meta.json (quality.gaze_filled_spans).</p>")
    return render.section("gaze", "Gaze (per frame, relative to the head)", fig + note + _gaze_consistency(g, samples))


def _gaze_consistency(g: np.ndarray, samples: list[dict]) -> str:
    """Left against right eye per frame (yaw, pitch); per clip, left-right yaw r against how far gaze moves, and the
    left-right offset the gaze stage removed."""
    col = {k: np.array([np.nan if r.get(k) is None else r[k] for r in samples], dtype=np.float64)
           for k in ("gaze_lr_yaw_r", "gaze_yaw_range", "gaze_vergence_offset", "gaze_mouth_r")}
    axes = (fig := Figure(figsize=(17, 3.4))).subplots(1, 4, gridspec_kw={"wspace": 0.35})
    for ax, (a, b, name) in zip(axes, ((0, 2, "yaw"), (1, 3, "pitch"))):
        ok = np.isfinite(g[:, [a, b]]).all(1)
        lim = max(10.0, float(np.percentile(np.abs(g[ok][:, [a, b]]), 99))) if ok.sum() > 2 else 10.0
        if ok.sum() > 2:
            ax.hist2d(g[ok, a], g[ok, b], bins=50, range=[[-lim, lim], [-lim, lim]], cmin=1)
            ax.set_title(f"gaze {name} per frame (r={np.corrcoef(g[ok, a], g[ok, b])[0, 1]:.2f}, n={ok.sum()})")
        ax.plot([-lim, lim], [-lim, lim], color="#c33", lw=1)
        ax.set(xlabel=f"image-left eye {name} (deg)", ylabel=f"image-right eye {name} (deg)")
    ok = np.isfinite(col["gaze_lr_yaw_r"]) & np.isfinite(col["gaze_yaw_range"])
    axes[2].scatter(col["gaze_yaw_range"][ok], col["gaze_lr_yaw_r"][ok], s=12, color="#4a7ab5")
    axes[2].axhline(0.8, color="#c33", lw=1)
    axes[2].set(xlabel="gaze yaw spread, p95 - p5 (deg)", ylabel="left-right yaw r", title="per clip")
    axes[3].hist(col["gaze_vergence_offset"][np.isfinite(col["gaze_vergence_offset"])], bins=30, color="#4a7ab5",
                 histtype="stepfilled")
    axes[3].set(xlabel="left minus right yaw removed (deg)", title="per clip: personal offset")
    moving = col["gaze_yaw_range"] > 10
    rows = [[name, f"{np.nanmedian(v):.2f}" if np.isfinite(v).any() else "-"] for name, v in (
        (f"median left-right yaw r, the {moving.sum()} clips whose gaze yaw spread is over 10 deg",
         col["gaze_lr_yaw_r"][moving]),
        ("median |r| of gaze with mouth opening", col["gaze_mouth_r"]),
        ("median |left-right offset removed| (deg)", np.abs(col["gaze_vergence_offset"])))]
    return render.img("fig-gaze-consistency", "Gaze consistency: left against right eye per frame and per clip",
                      render.png(fig, left=0.7)) + render.table(["", ""], rows, numeric=(1,))


def _av_sync(samples: list[dict]) -> str:
    """Audio-video offset per clip (stages/sync.py): where the audio was found, how sure, what was moved."""
    def column(key: str, rows: list[dict]) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=np.float64)

    measured = [r for r in samples if r.get("av_sync_confidence") is not None]
    sure = [r for r in measured if "av_sync_low" not in (r.get("flags") or [])]
    voice = [r for r in measured if "voice_over" in (r.get("flags") or [])]
    fig = render.histograms("fig-av-sync", "Histograms of the audio-video offset per clip and of its confidence", [
        ("offset found (+ = audio late)", [("confident", column("av_offset_frames", sure)),
                                           ("av_sync_low", column("av_offset_frames",
                                                                  [r for r in measured if r not in sure]))]),
        ("confidence", [("voice_over", column("av_sync_confidence", voice)),
                        ("other clips", column("av_sync_confidence", [r for r in measured if r not in voice]))])],
        "frames at 25 fps / z")
    applied = column("av_shift_applied_frames", measured)
    flags = Counter(f for r in measured for f in (r.get("flags") or []))
    rows = [["clips measured", len(measured)], ["audio moved (|shift| > 0)", int(np.sum(applied != 0))],
            ["median |shift| moved (frames)", f"{np.median(np.abs(applied[applied != 0])):.0f}"
             if np.any(applied != 0) else "-"],
            ["median confidence", f"{np.nanmedian(column('av_sync_confidence', measured)):.2f}" if measured else "-"],
            *[[flag, flags.get(flag, 0)] for flag in ("av_offset_large", "av_sync_low", "voice_over")]]
    note = ("<p>Offset of each clip's audio against its lips (lip opening against 1-4 kHz speech energy, "
            "posetalk_data.avsync), in frames; positive: the audio is late. Where it was confident and within "
            "sync.max_shift_frames the clip's audio was moved by it before audio.flac and the speech features were "
            "made (samples.parquet av_shift_applied_frames). Confidence is a z-score of the peak correlation; "
            "voice_over: speech the mouth does not follow.</p>")
    return render.section("av-sync", "Audio-video offset", fig + note + render.table(["", ""], rows, numeric=(1,)))


def _flags(samples: list[dict]) -> str:
    counts = Counter(flag for r in samples for flag in (r.get("flags") or []))
    n = max(len(samples), 1)
    rows = [[flag, k, f"{100 * k / n:.1f}%"] for flag, k in counts.most_common()]
    rows.append(["(no flag)", sum(1 for r in samples if not r.get("flags")), ""])
    return render.section("flags", "Quality flags of kept clips",
                          render.table(["flag", "clips", "share"], rows, numeric=(1, 2)))


def _throughput(timings: dict | None) -> str:
    stages = {k: float(v) for k, v in (timings or {}).items() if k not in TIMING_EXTRAS}
    if not stages:
        return render.section("throughput", "Throughput per stage", "<p>Throughput: not recorded for this build.</p>")
    frames, wall, total = (timings or {}).get("frames"), (timings or {}).get("wall_seconds"), sum(stages.values())
    rows = [[s, f"{t:.1f}", f"{100 * t / max(total, 1e-9):.0f}%", f"{frames / t:.1f}" if frames and t > 0 else "-"]
            for s, t in stages.items()]
    rows.append(["all stages", f"{total:.1f}", "100%", f"{frames / total:.1f}" if frames and total > 0 else "-"])
    if wall:
        rows.append(["wall clock", f"{wall:.1f}", "", f"{frames / wall:.1f}" if frames else "-"])
    fig = Figure(figsize=(7, 0.4 * len(stages) + 1))
    ax = fig.subplots()
    ax.barh(list(stages)[::-1], list(stages.values())[::-1], color="#4a7ab5")
    ax.set_xlabel("worker seconds")
    note = f"<p>{frames} frames processed.</p>" if frames else ""
    return render.section("throughput", "Throughput per stage", note + render.table(
        ["stage", "worker seconds", "share", "frames/s"], rows, numeric=(1, 2, 3)) +
        render.img("fig-throughput", "Bar chart of worker seconds per stage",
                   render.png(fig, left=0.3 + 0.08 * max(map(len, stages)))))    # room for the longest stage name


def _versions(manifest: dict) -> str:
    rows = [[k, v] for k, v in sorted(manifest.get("versions", {}).items())]
    pipeline = render.escape(json.dumps(manifest.get("pipeline", {}), indent=1, sort_keys=True))
    return render.section("versions", "Versions", render.table(["component", "version"], rows) +
                    f"<details><summary>pipeline config</summary><pre>{pipeline}</pre></details>")


def _thumbnails(clips: dict, thumb_keys: set[str], samples: list[dict]) -> str:
    flags = {r["key"]: r.get("flags") or [] for r in samples}
    items = []
    for i, key in enumerate(k for k in clips if k in thumb_keys):
        jpg, ypr = render.thumbnail(clips[key])
        if jpg is None:
            continue
        angles = "" if ypr is None else "<br>yaw {:.0f} pitch {:.0f} roll {:.0f}".format(*ypr)
        caption = f"{render.escape(key)}<br>{render.escape(', '.join(flags.get(key, [])) or 'no flags')}{angles}"
        items.append(render.img(f"thumb-{i}", f"Middle frame of {key} with landmarks and pose axes", jpg,
                          "image/jpeg", caption))
    legend = ("<p>Middle frame of each clip; landmarks in yellow; head axes from the frame's yaw/pitch/roll, "
              "projected orthographically: face x (red), up (green), nose direction (blue).</p>")
    grid = f'<div class=grid id="fig-thumbnails">{"".join(items)}</div>' if items else "<p>No thumbnails.</p>"
    return render.section("thumbnails", "Sample thumbnails", legend + grid)
