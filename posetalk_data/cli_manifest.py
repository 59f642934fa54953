"""posetalk-data manifest ...: verify, inspect, filter, split, merge, compare and rebuild shared builds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import inspection, storage
from . import manifest as mf
from .cli_output import storage_errors
from .reading import ManifestError, UnsafeShardError
from .splits import SPLIT_FRACTIONS, SPLIT_SEED

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _path(path: str):
    """A manifest file, or a build folder holding manifest.json; a path or a URL (s3://bucket/builds/x). Typer
    options are str, not Path: Path would turn s3://b/x into s3:/b/x."""
    try:
        return storage.join(path, "manifest.json") if storage.is_dir(path) else storage.location(path)
    except storage_errors() as err:
        console.print(f"[bold red]error:[/] cannot reach {path}: {type(err).__name__}: {err}", soft_wrap=True)
        raise typer.Exit(2)


def _guard(fn, *args, **kwargs):
    """Run a manifest function; a bad manifest or shard, or a store that cannot be reached, is a clear message and
    exit status 2."""
    try:
        return fn(*args, **kwargs)
    except (ManifestError, UnsafeShardError, FileNotFoundError, NotADirectoryError) as err:
        console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
        raise typer.Exit(2)
    except storage_errors() as err:
        console.print(f"[bold red]error:[/] {type(err).__name__}: {err}", soft_wrap=True)
        raise typer.Exit(2)


@app.command()
def verify(manifest: str = typer.Argument(..., help="manifest.json or its build folder (path or URL)")) -> None:
    """Check shards (present, sha256, sample count) and samples (members, dtypes, T rows); exit 1 on a problem."""
    from .verify import verify as run_verify

    problems = _guard(run_verify, _path(manifest))
    if not problems:
        console.print(f"[green]ok[/]: {_path(manifest)} verifies")
        return
    table = Table(title=f"{len(problems)} problem(s)")
    table.add_column("shard", no_wrap=True)   # a path people copy from the terminal
    for column in ("key", "what", "detail"):
        table.add_column(column)
    for p in problems:
        table.add_row(p.shard or "", p.key or "", p.what, p.detail)
    console.print(table)
    raise typer.Exit(1)


@app.command()
def inspect(manifest: str = typer.Argument(..., help="manifest.json or its build folder (path or URL)"),
            as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON on stdout.")) -> None:
    """Counts, hours, flags, per-column distributions and feature layers with their model versions."""
    stats = _guard(inspection.stats, _path(manifest))
    if as_json:
        typer.echo(json.dumps(stats, indent=1, default=str))
        return
    counts = Table(title="counts")
    counts.add_column("what")
    counts.add_column("value", justify="right")
    for name, value in {**stats["counts"], **{f"flag {k}": v for k, v in stats["flags"].items()}}.items():
        counts.add_row(name, str(value))
    console.print(counts)
    columns = Table(title="columns (samples.parquet)")
    for name in ("column", "min", "p05", "median", "p95", "max"):
        columns.add_column(name, justify="right" if name != "column" else "left")
    for name, d in stats["columns"].items():
        columns.add_row(name, *(f"{d[k]:.3g}" if d.get(k) is not None else "-"
                                for k in ("min", "p05", "median", "p95", "max")))
    console.print(columns)
    layers = Table(title="layers")
    layers.add_column("member")
    layers.add_column("versions")
    for member, info in stats["layers"].items():
        layers.add_row(member, json.dumps(info.get("versions", info), default=str))
    console.print(layers)


@app.command()
def filter(manifest: str = typer.Argument(..., help="manifest.json or its build folder (path or URL)"),
           where: str = typer.Option(..., "--where", help="Expression on samples.parquet columns, e.g. "
                                                          "\"duration > 3 and not silent and 'small_face' not in flags\""),
           out: str = typer.Option(..., "--out", help="The new manifest (JSON) over the same shards.")) -> None:
    """A new manifest over the same shards keeping the samples where the expression holds (shards not rewritten)."""
    result = _guard(mf.filter_manifest, _path(manifest), where, out)
    console.print(f"wrote {out}: {result['counts']['samples']} samples")
    if result["derived"]["rows_failed"]:
        console.print(f"[yellow]note:[/] the expression could not be evaluated on {result['derived']['rows_failed']} "
                      f"row(s), which were left out ({result['derived']['first_error']})")


@app.command()
def split(manifest: str = typer.Argument(..., help="manifest.json or its build folder (path or URL)"),
          seed: str = typer.Option(SPLIT_SEED, "--seed", help="Same seed, same split. The default is the one the "
                                                              "dataset adapters use for the samples' split column."),
          fractions: str = typer.Option(",".join(f"{f:g}" for _, f in SPLIT_FRACTIONS), "--fractions",
                                        help="train,val,test fractions, of identities: see below."),
          identity: str = typer.Option("identity", "--identity", help="What must not cross splits: identity (the "
                                       "samples' identity column, the person for hdtf, celebv-text and mead; the "
                                       "video_id where a source names none), video_id, or a regex over video_id "
                                       "(group 1 if any)."),
          out: Optional[str] = typer.Option(None, "--out", help="Folder for train.json, val.json, test.json.")) -> None:
    """Identity-disjoint train/val/test manifests, reproducible by seed.

    An identity's split is a hash of (seed, identity) alone, cut at the fractions (posetalk_data/splits.py).

    It is the rule the dataset adapters write into the samples' split column: the defaults reproduce it exactly.

    Adding clips or identities to a dataset never moves an existing identity to another split.

    So the fractions hold approximately: per identity, not per sample, and with few identities they scatter.
    """
    try:
        parts = tuple(float(f) for f in fractions.split(","))
    except ValueError:
        console.print(f"[bold red]error:[/] --fractions {fractions!r}: give numbers separated by commas, "
                      "e.g. 0.8,0.1,0.1", soft_wrap=True)
        raise typer.Exit(2)
    splits = _guard(mf.split_manifest, _path(manifest), out, seed=seed, fractions=parts, identity=identity)
    for name, keys in splits.items():
        console.print(f"{name}: {len(keys)} samples")


@app.command()
def merge(manifests: list[str] = typer.Argument(..., help="Two or more manifests or build folders."),
          out: str = typer.Option(..., "--out", help="The merged manifest (JSON)."),
          on_duplicate: str = typer.Option("refuse", "--on-duplicate", help="refuse, or first (keep the first)."),
          allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch",
                                                      help="Merge builds made with different feature versions.")) -> None:
    """Several builds into one manifest; duplicate keys and mismatched feature versions are refused unless asked."""
    result = _guard(mf.merge_manifests, [_path(m) for m in manifests], out, on_duplicate=on_duplicate,
                    allow_version_mismatch=allow_version_mismatch)
    console.print(f"wrote {out}: {result['counts']['samples']} samples")


def _print_comparison(report: dict) -> bool:
    differs = bool(report["only_in_a"] or report["only_in_b"] or report["differing"])
    console.print(f"same: {report['same']}  only in first: {len(report['only_in_a'])}  "
                  f"only in second: {len(report['only_in_b'])}  differing: {len(report['differing'])}")
    for key, members in sorted(report["differing"].items()):
        console.print(f"  {key}: {', '.join(members)}")
    return differs


@app.command()
def compare(a: str = typer.Argument(..., help="First manifest or build folder."),
            b: str = typer.Argument(..., help="Second manifest or build folder.")) -> None:
    """Which samples two builds share, and which members differ (by sha256). Exit 1 when they differ."""
    if _print_comparison(_guard(inspection.compare, _path(a), _path(b))):
        raise typer.Exit(1)


@app.command()
def rebuild(manifest: str = typer.Argument(..., help="manifest.json or its build folder (path or URL)"),
            out: Path = typer.Option(..., "--out", help="Folder for the new build."),
            input_root: Optional[Path] = typer.Option(None, "--input", help="Where the sources are (folder builds)."),
            workers: Optional[int] = typer.Option(None, "--workers", min=0, help="As for build.")) -> None:
    """Build the manifest's sources again with its pipeline config; report samples that differ. Exit 1 if any."""
    from .rebuild import rebuild as run_rebuild

    report = _guard(run_rebuild, _path(manifest), out, input_root=input_root, workers=workers)
    if report["sources_changed"]:
        console.print(f"[yellow]sources changed since the build:[/] {report['sources_changed']}")
    if _print_comparison(report):
        raise typer.Exit(1)
