"""Looking into a finished build or derived manifest without changing anything: `stats` (posetalk-data manifest
inspect: counts, hours, flags, column distributions, each member with the versions that made it) and `compare`
(which samples differ, member by member; posetalk-data manifest compare and rebuild)."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from .reading import read_samples, selection
from .shards import SAMPLES_SCHEMA


def _describe(values: list) -> dict:
    arr = np.array([v for v in values if v is not None], dtype=float)
    if not arr.size:
        return {"missing": len(values)}
    q = map(float, np.percentile(arr, [0, 5, 50, 95, 100]))
    return {**dict(zip(("min", "p05", "median", "p95", "max"), q)), "mean": float(arr.mean()),
            "missing": len(values) - int(arr.size)}


def layers(manifest: dict) -> dict:
    """Each member with what it holds and the versions that made it (as its stage declares them)."""
    from .pipeline import LAYER_VERSIONS     # here: the stages' modules import OpenCV and SciPy (0.4 s)

    versions = manifest.get("versions", {})
    # feature layers (mel.npy, minilm.npy, ...) have their versions under their own member name
    return {member: {"description": desc, "versions": {k: versions[k] for k in LAYER_VERSIONS.get(member, (member,))
                                                        if k in versions}}
            for member, desc in manifest.get("members", {}).items()}


def stats(manifest_path: str | Path) -> dict:
    manifest, _, parts = selection(manifest_path)
    rows = [r for _, rs in parts for r in rs]
    numeric = [f.name for f in SAMPLES_SCHEMA if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    has_failures = "failures" in manifest.get("tables", {})     # derived manifests carry no failures table
    return {"manifest_version": manifest.get("manifest_version", 1),
            "counts": {"samples": len(rows), "shards": sum(1 for _, rs in parts if rs),
                       "videos": len({r["video_id"] for r in rows}),
                       "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
                       "failures": manifest.get("counts", {}).get("failures") if has_failures else None},
            "sources": dict(Counter(r["source"] for r in rows)),
            "flags": dict(Counter(f for r in rows for f in r["flags"] or [])),
            "silent": sum(bool(r["silent"]) for r in rows),
            "columns": {c: _describe([r[c] for r in rows]) for c in numeric},
            "layers": layers(manifest), "versions": manifest.get("versions", {}), "pipeline": manifest.get("pipeline")}


def member_hashes(manifest_path: str | Path) -> dict[str, dict[str, str]]:
    return {key: {name: hashlib.sha256(data).hexdigest() for name, data in sample.items()}
            for key, sample in read_samples(manifest_path)}


def compare(manifest_a: str | Path, manifest_b: str | Path, *, only_keys_of_a: bool = False) -> dict:
    """Keys only in one side, and per differing key the members whose bytes differ."""
    a, b = member_hashes(manifest_a), member_hashes(manifest_b)
    if only_keys_of_a:
        b = {k: v for k, v in b.items() if k in a}
    differing = {k: sorted(m for m in a[k].keys() | b[k].keys() if a[k].get(m) != b[k].get(m))
                 for k in sorted(a.keys() & b.keys())}
    return {"only_in_a": sorted(a.keys() - b.keys()), "only_in_b": sorted(b.keys() - a.keys()),
            "differing": {k: v for k, v in differing.items() if v}, "same": sum(not v for v in differing.values())}
