"""Regenerate manifests/: each dataset's clip list from its public metadata, and the identity-disjoint split.

    python scripts/make_source_manifests.py [--metadata ../shared/metadata] [--out manifests]

The split of an identity (HDTF person, CelebV-Text YouTube id, MEAD actor) is `split_of(identity)`: a hash of a
fixed seed and the identity alone, so a lab holding the full dataset computes the same split for every person.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from posetalk_data.sources import celebv_text, hdtf, mead  # noqa: E402
from posetalk_data.splits import SPLIT_FRACTIONS, SPLIT_SEED, split_of  # noqa: E402

F, S, I = pa.float64(), pa.string(), pa.int64()
BOX = [("crop_left", F), ("crop_top", F), ("crop_right", F), ("crop_bottom", F)]
SCHEMAS = {
    "hdtf": [("clip_id", S), ("identity", S), ("split", S), ("subset", S), ("video", S), ("clip_index", I),
             ("start", F), ("end", F), ("youtube_id", S), ("url", S), ("resolution", I), *BOX, ("crop_units", S),
             ("crop_ratio", F), ("notes", S)],
    "celebv-text": [("clip_id", S), ("identity", S), ("split", S), ("youtube_id", S), ("meta_video", S),
                    ("set", S), ("version", S), ("start", F), ("end", F), *BOX, ("crop_units", S),
                    ("same_span_as", S), ("notes", S)],
    "mead": [("clip_id", S), ("identity", S), ("split", S), ("actor", S), ("emotion", S), ("emotion_idx", I),
             ("level", I), ("frames", I), ("reference_frame", S), ("list_file", S)],
}


def _with_box(row: dict, box: list | None, units: str | None) -> dict:
    row.update(zip([name for name, _ in BOX], box or [None] * 4))
    row["crop_units"] = units
    return row


def _notes(scan) -> dict[str, str]:
    """clip id -> the kinds of problem its metadata has (the media-dependent ones are left to the build)."""
    notes: dict[str, list[str]] = {}
    for p in scan.problems:
        if p.kind not in ("no_media", "unavailable"):
            notes.setdefault(p.id, []).append(p.kind)
    return {k: ",".join(v) for k, v in notes.items()}


def source_rows(metadata: Path) -> dict[str, list[dict]]:
    """Manifest rows per source from the metadata folder (hdtf/, celebv-text/, mead/ as in ../shared/metadata)."""
    out = {}
    scan = hdtf.scan(metadata / "hdtf", probe=False)
    notes = _notes(scan)
    out["hdtf"] = [_with_box({**r, "split": split_of(r["identity"]), "notes": notes.get(r["clip_id"])},
                             r["crop_box"], "pixels" if r["crop_box"] else None) for r in scan.clips]
    scan = celebv_text.scan(metadata / "celebv-text", probe=False)
    notes = _notes(scan)
    out["celebv-text"] = [_with_box({**r, "split": split_of(r["identity"]), "notes": notes.get(r["clip_id"])},
                                    r["bbox"], r["bbox_units"]) for r in scan.clips]
    out["mead"] = [{**r, "split": split_of(r["identity"])}
                   for f in sorted((metadata / "mead").glob("video_list*.txt")) for r in mead.frame_list_clips(f)]
    return out


def table(source: str, rows: list[dict]) -> pa.Table:
    schema = pa.schema(SCHEMAS[source])
    rows = sorted(rows, key=lambda r: r["clip_id"])
    return pa.Table.from_pylist([{name: r.get(name) for name in schema.names} for r in rows], schema=schema)


def splits(rows_by_source: dict[str, list[dict]]) -> dict:
    out = {"seed": SPLIT_SEED, "fractions": dict(SPLIT_FRACTIONS),
           "rule": "split = the bucket of sha256(seed \\0 identity) read as a fraction of 2^64 (first 8 bytes)",
           "identity": {"hdtf": "person: the video name without its trailing number (WDA/WRA); the video name (RD)",
                        "celebv-text": "YouTube id", "mead": "actor id"},
           "sources": {}}
    for source, rows in rows_by_source.items():
        by_split: dict[str, dict] = {name: {"identities": set(), "clips": 0} for name, _ in SPLIT_FRACTIONS}
        for r in rows:
            by_split[r["split"]]["identities"].add(r["identity"])
            by_split[r["split"]]["clips"] += 1
        out["sources"][source] = {name: {"clips": v["clips"], "identities": sorted(v["identities"])}
                                  for name, v in by_split.items()}
    return out


def write_manifests(metadata: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = source_rows(metadata)
    written = []
    for source, source_rows_ in rows.items():
        path = out / f"{source.replace('-', '_')}_clips.parquet"
        pq.write_table(table(source, source_rows_), path)
        written.append(path)
    path = out / "splits.json"
    path.write_text(json.dumps(splits(rows), indent=1, sort_keys=False) + "\n")
    return [*written, path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, default=REPO.parent / "shared" / "metadata")
    parser.add_argument("--out", type=Path, default=REPO / "manifests")
    args = parser.parse_args()
    for path in write_manifests(args.metadata, args.out):
        print(path)


if __name__ == "__main__":
    main()
