"""Where a build's source time went: kept in clips, or dropped, and why (the report's "Source time" section).

A build accounts for every second of every source (README: *Source time*): the samples table's spans are kept,
and failures.parquet lists the rest: whole videos (kind "video"), clips dropped after they were cut ("clip"), and
the frames of a video that no clip holds ("span": a scene cut's trim, no face, a face span too short, ...). A row
whose span is not known (a file that could not even be probed) counts as a video of unknown length.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

CUTS = re.compile(r"^scene cut \((\d+) cuts? at")


def category(reason: str | None) -> str:
    """A reason without its per-clip detail: the part before the first ':' or '('."""
    return re.split(r"[:(]", reason or "")[0].strip() or "(no reason given)"


@dataclass
class SourceTime:
    kept: float = 0.0                                   # seconds in kept clips
    dropped: dict[tuple[str, str], list[float]] = field(default_factory=dict)   # (stage, reason) -> [rows, s]
    unknown_length: int = 0                             # dropped videos whose length nobody could read
    cuts: int = 0                                       # scene cuts found
    videos_cut: int = 0                                 # videos with at least one

    @property
    def total(self) -> float:
        return self.kept + sum(s for _, s in self.dropped.values())


def seconds(row: dict) -> float | None:
    """A row's span in seconds (start None: the start of the source); None when its end is not known."""
    return None if row.get("end") is None else max(0.0, row["end"] - (row.get("start") or 0.0))


def source_time(samples: list[dict], failures: list[dict]) -> SourceTime:
    out = SourceTime(kept=sum(seconds(r) or 0.0 for r in samples))
    dropped: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    cut_videos = set()
    for row in failures:
        length = seconds(row)
        if length is None:
            out.unknown_length += 1
            continue
        entry = dropped[(row["stage"], category(row["reason"]))]
        entry[0] += 1
        entry[1] += length
        found = CUTS.match(row["reason"] or "")
        if found and row.get("kind") == "span":
            out.cuts += int(found.group(1))
            cut_videos.add(row["video_id"])
    out.dropped, out.videos_cut = dict(dropped), len(cut_videos)
    return out
