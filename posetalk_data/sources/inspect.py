"""`posetalk-data sources inspect`: what a dataset folder holds and what a build would do with it, before any heavy
work (metadata and one listing of the folder or store prefix only; ffprobe of the local files only with probe=True)."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

from .. import storage
from . import celebv_text, hdtf, mead
from .base import SourceError, SourceScan

SCANNERS: dict[str, Callable[..., SourceScan]] = {"celebv-text": celebv_text.scan, "hdtf": hdtf.scan,
                                                  "mead": mead.scan}
EXAMPLES = 3


def scan_source(src: str, root, **options: Any) -> SourceScan:
    if src not in SCANNERS:
        raise SourceError(f"unknown dataset source {src!r}; choose one of {', '.join(SCANNERS)}")
    return SCANNERS[src](storage.location(root), **options)


def inspect_source(src: str, root, *, probe: bool = False, **options: Any) -> dict[str, Any]:
    """Counts, problems grouped by kind, and the build plan for a dataset folder or store prefix, as a JSON-able
    dict."""
    if options.get("download"):
        raise SourceError("inspect never downloads: it reports which videos are missing; build with --download")
    started = time.perf_counter()
    scan = scan_source(src, root, probe=probe, **options)
    groups: dict[tuple[str, bool], list] = {}
    for p in scan.problems:
        groups.setdefault((p.kind, p.kept), []).append(p)
    problems = [{"kind": kind, "kept": kept, "count": len(ps), "examples": [p.id for p in ps[:EXAMPLES]],
                 "reason": ps[0].reason} for (kind, kept), ps in sorted(groups.items(), key=lambda g: -len(g[1]))]
    return {"source": src, "root": str(scan.root), "metadata": scan.metadata, "counts": scan.counts,
            "notes": scan.notes, "problems": problems, "plan": plan(scan, probe and not storage.is_url(scan.root)),
            "seconds": round(time.perf_counter() - started, 3)}


def plan(scan: SourceScan, probed: bool) -> list[str]:
    """What `posetalk-data build --src <source>` would do with this folder, in sentences."""
    specs = scan.specs
    if not specs:
        return [f"nothing to build: none of the {len(scan.clips)} annotated clips has its media under {scan.root}",
                "put the downloaded videos anywhere under --root (found by file name)"
                + (", or build with --download" if scan.source == "celebv-text" else "")]
    spans = sum(s.start is not None for s in specs)
    lines = [f"process {len(specs)} videos: {spans} spans cut from full videos, {len(specs) - spans} whole clip files"]
    hints = sum(bool(s.extra.get("crop_hint")) for s in specs)
    prompts = sum(bool(s.extra.get("prompts")) for s in specs)
    audio = sum(s.audio_path is not None for s in specs)
    lines.append(f"{hints} with a crop hint, {prompts} with text prompts, {audio} with a separate audio file")
    left_out = {p.id for p in scan.problems if not p.kept}
    kept = {p.id for p in scan.problems if p.kept} & {s.video_id for s in specs}
    if left_out:
        by_kind = Counter(p.kind for p in scan.problems if not p.kept)
        lines.append(f"leave out {len(left_out)} clips or videos (" +
                     ", ".join(f"{k}: {n}" for k, n in by_kind.most_common()) + ")")
    if kept:
        lines.append(f"build {len(kept)} clips despite a problem (reasons below)")
    if not probed:
        lines.append("files in a store are probed by the build's workers that download them: spans past a video's "
                     "end are found by its probe stage" if storage.is_url(scan.root) else
                     "local files were not probed: spans past a video's end are found by the build's probe stage "
                     "(or run inspect with --probe)")
    return lines


def render_inspection(report: dict[str, Any]) -> str:
    """Plain text for a terminal (rich prints it as is)."""
    out = [f"{report['source']} at {report['root']}  ({report['seconds']:.2f} s)"]
    if report["metadata"]:
        out.append("metadata: " + ", ".join(report["metadata"][:6]) +
                   (f" (+{len(report['metadata']) - 6} more)" if len(report["metadata"]) > 6 else ""))
    out.append("counts:")
    width = max(map(len, report["counts"]), default=0)
    out += [f"  {k:<{width}}  {v}" for k, v in report["counts"].items()]
    if report["notes"]:
        out.append("quirks and notes:")
        out += [f"  {n}" for n in report["notes"]]
    if report["problems"]:
        out.append("problems (kind, count, built anyway?, examples: first reason):")
        for p in report["problems"]:
            more = f" +{p['count'] - len(p['examples'])}" if p["count"] > len(p["examples"]) else ""
            out.append(f"  {p['kind']:<14} {p['count']:>6}  {'kept' if p['kept'] else 'left out':<8}  "
                       f"{', '.join(p['examples'])}{more}: {p['reason']}")
    out.append("the build would:")
    out += [f"  {line}" for line in report["plan"]]
    return "\n".join(out)
