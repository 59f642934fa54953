"""`manifest rebuild`: build a manifest's sources again with its recorded pipeline config, then compare."""
from __future__ import annotations

from pathlib import Path

from .build import build
from .config import PipelineConfig
from .inspection import compare
from .reading import ManifestError, check_relative, load_manifest
from .schema import VideoSpec


def _rebuild_specs(manifest: dict, input_root: Path | None, out_dir: Path) -> tuple[list[VideoSpec], Path, list]:
    """(specs, root, [sources missing or of another size than recorded]) from the manifest's source list."""
    src, sources = manifest.get("source"), manifest.get("sources", [])
    if src == "folder":
        if input_root is None:
            raise ManifestError("rebuilding a folder build needs input_root (the folder its source paths are under)")
        specs = [VideoSpec(source="folder", video_id=s["video_id"], start=s.get("start"), end=s.get("end"),
                           path=str(input_root / check_relative(s["path"], "source"))) for s in sources]
        root = input_root
    else:      # other adapters (demo, datasets) list their videos again; keep the manifest's ones
        from .sources import source_specs

        try:
            specs, root = source_specs(src, input_root, out_dir)
        except ValueError as err:
            raise ManifestError(f"cannot rebuild source {src!r}: {err}") from None
        specs = [s for s in specs if s.video_id in {r["video_id"] for r in sources}]
    recorded, found = {s["video_id"]: s.get("bytes") for s in sources}, {s.video_id for s in specs}
    changed = [{"video_id": v, "why": "not listed by the source"} for v in recorded if v not in found]
    for spec in specs:
        path = Path(spec.path)
        if not path.is_file() or path.stat().st_size != recorded.get(spec.video_id):
            changed.append({"video_id": spec.video_id, "why": "missing" if not path.is_file() else "size differs"})
    return specs, root, changed


def rebuild(manifest_path: str | Path, out_dir: str | Path, *, input_root: str | Path | None = None,
            workers: int | None = 0) -> dict:
    """Build the manifest's sources again with its pipeline config into out_dir, then compare the samples
    (restricted to the manifest's keys). Returns compare()'s dict plus sources_changed and the new manifest path."""
    manifest, out_dir = load_manifest(manifest_path), Path(out_dir)
    if not manifest.get("pipeline"):
        raise ManifestError(f"{manifest_path}: no single pipeline config to rebuild from (a merge of different builds)")
    cfg = PipelineConfig.model_validate(manifest["pipeline"])
    specs, root, changed = _rebuild_specs(manifest, Path(input_root) if input_root else None, out_dir)
    build(specs, out_dir, cfg, source=manifest["source"], root=root, workers=workers)
    report = compare(manifest_path, out_dir / "manifest.json", only_keys_of_a=True)
    return {**report, "sources_changed": changed, "rebuilt": str(out_dir / "manifest.json")}
