"""The one storage layer: every file a build, a manifest command or a trainer reads or writes goes through here,
whether it is a plain path, `file://`, `s3://`, `gs://` or another fsspec URL.

Writes are atomic for a reader (or a resumed run after kill -9): on a local disk a temporary name beside the
target, then one rename; on an object store one PUT (single or multipart), which makes the object appear whole or
not at all. Credentials and endpoints come only the standard ways: the AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ... or ~/.aws), fsspec's own config (FSSPEC_S3_ENDPOINT_URL, ~/.config/fsspec), or the
`storage:` section of a pipeline YAML (endpoints and client options, never secrets); never a command-line flag.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

CRASH_ENV = "POSETALK_CRASH_AT"
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
SECRET_WORDS = ("secret", "password", "token", "credential", "key_id", "access_key")

_options: dict[str, dict] = {}      # protocol -> fsspec options from a YAML `storage:` section (see configure)


class StorageError(OSError):
    """A location that cannot be used: an unknown protocol, a missing fsspec backend, an unreachable store."""


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL, as `kill -9` would) when POSETALK_CRASH_AT names this point: the crash-safety
    tests use it to land a kill exactly between writing a file and renaming (or uploading) it, which a test polling
    from outside could only hit by luck. Points: `write:<file name>` for every atomic write."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def is_url(loc) -> bool:
    """A URL of a store other than this machine's disk (file:// is a plain path)."""
    return bool(URL.match(str(loc))) and not str(loc).startswith("file://")


def local(loc) -> Path:
    """A plain path for a local location (`file://` stripped)."""
    text = str(loc)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def location(loc) -> "str | Path":
    """What callers keep: a Path for this machine's disk, the URL text for a store (a Path would turn s3://b into
    s3:/b)."""
    return str(loc).rstrip("/") if is_url(loc) else local(loc)


def check_options(options: dict, origin: str = "storage") -> dict:
    """Endpoints and client settings only: a key that names a secret is refused (credentials come from the
    environment or the provider's own files, so they never land in a YAML that is copied into a manifest)."""
    for key, value in options.items():
        if any(word in str(key).lower() for word in SECRET_WORDS):
            raise ValueError(f"{origin}.{key}: credentials are not read from the config; set them the standard way "
                             "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, gcloud auth)")
        if isinstance(value, dict):
            check_options(value, f"{origin}.{key}")
    return options


def configure(options: dict[str, dict] | None) -> None:
    """Per-protocol fsspec options (e.g. {"s3": {"endpoint_url": "http://minio:9000"}}) for this process; the
    build hands them to its workers with the pipeline config."""
    _options.clear()
    for protocol, opts in (options or {}).items():
        _options[protocol] = check_options(dict(opts or {}), f"storage.{protocol}")


def filesystem(loc) -> tuple[object, str]:
    """(fsspec filesystem, path inside it) for a URL."""
    import fsspec

    protocol = str(loc).split("://", 1)[0]
    # no listing cache: other processes (the workers, a resumed build) change the store behind this one's back
    options = {"use_listings_cache": False, **_options.get(protocol, {})}
    try:
        return fsspec.core.url_to_fs(str(loc), **options)
    except ImportError as err:
        package, extra = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}.get(
            protocol, (f"the fsspec backend for {protocol}://", None))
        hint = f" (pip install 'posetalk[{extra}]')" if extra else ""
        raise StorageError(f"{loc}: {protocol}:// needs {package}{hint}") from err
    except ValueError as err:
        raise StorageError(f"{loc}: {err}") from None


def join(base, *parts: str) -> "str | Path":
    """`base`/`parts`; parts are relative POSIX paths."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return local(base).joinpath(*parts)


def parent(loc) -> "str | Path":
    if is_url(loc):
        head, _, _ = str(loc).rstrip("/").rpartition("/")
        return head
    return local(loc).parent


def name(loc) -> str:
    return str(loc).rstrip("/").rpartition("/")[2] if is_url(loc) else local(loc).name


def with_suffix(loc, suffix: str) -> "str | Path":
    """`loc` with its file name's suffix replaced (as Path.with_suffix does), a URL kept a URL."""
    if not is_url(loc):
        return local(loc).with_suffix(suffix)
    stem = PurePosixPath(name(loc)).with_suffix(suffix).name
    return join(parent(loc), stem)


def relative_to(loc, root) -> str | None:
    """`loc` as a POSIX path relative to `root`, or None when it lies outside it."""
    if is_url(loc) or is_url(root):
        prefix = str(root).rstrip("/") + "/"
        return str(loc)[len(prefix):] if str(loc).startswith(prefix) else None
    try:
        return local(loc).resolve().relative_to(local(root).resolve()).as_posix()
    except ValueError:
        return None


def exists(loc) -> bool:
    if is_url(loc):
        fs, path = filesystem(loc)
        return fs.exists(path)
    return local(loc).exists()


def is_file(loc) -> bool:
    if is_url(loc):
        fs, path = filesystem(loc)
        return fs.isfile(path)
    return local(loc).is_file()


def is_dir(loc) -> bool:
    """A folder (on an object store: a prefix with something under it)."""
    if is_url(loc):
        fs, path = filesystem(loc)
        return fs.isdir(path)
    return local(loc).is_dir()


def size(loc) -> int:
    if is_url(loc):
        fs, path = filesystem(loc)
        return int(fs.size(path))
    return local(loc).stat().st_size


def listdir(loc) -> list[str]:
    """Names directly inside a folder, sorted ([] for none)."""
    if is_url(loc):
        fs, path = filesystem(loc)
        try:
            return sorted(PurePosixPath(p).name for p in fs.ls(path, detail=False, refresh=True) if p.rstrip("/")
                          != path.rstrip("/"))
        except FileNotFoundError:
            return []
    folder = local(loc)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def find(loc) -> dict[str, int]:
    """Every file under a folder, recursively: {path relative to it: size in bytes}, sorted by path; {} for a
    folder, prefix or bucket that does not exist (the caller says which location was empty)."""
    if is_url(loc):
        fs, path = filesystem(loc)
        prefix = path.rstrip("/") + "/"
        try:
            found = fs.find(path, detail=True)
        except FileNotFoundError:       # a missing bucket (a missing prefix is simply empty)
            return {}
        return {p[len(prefix):]: int(info.get("size") or 0) for p, info in sorted(found.items())
                if p.startswith(prefix) and info.get("type", "file") == "file"}
    root = local(loc)
    out, seen = {}, set()
    # linked folders are followed (a dataset unpacked on several disks and linked in), each real folder once
    for folder, dirs, files in os.walk(root, followlinks=True):
        if os.path.realpath(folder) in seen:
            dirs.clear()
            continue
        seen.add(os.path.realpath(folder))
        dirs.sort()
        for file in sorted(files):
            path = Path(folder) / file
            if path.is_file():
                out[path.relative_to(root).as_posix()] = path.stat().st_size
    return dict(sorted(out.items()))


def open_read(loc) -> BinaryIO:
    """A binary stream of the file (seekable: tarfile and pyarrow can read it in random access)."""
    if is_url(loc):
        fs, path = filesystem(loc)
        return fs.open(path, "rb")
    return open(local(loc), "rb")


def read_bytes(loc) -> bytes:
    if is_url(loc):
        fs, path = filesystem(loc)
        return fs.cat_file(path)
    return local(loc).read_bytes()


def read_text(loc) -> str:
    return read_bytes(loc).decode("utf-8")


def makedirs(loc) -> None:
    """A local folder and its parents (object stores have no folders: nothing to do)."""
    if not is_url(loc):
        local(loc).mkdir(parents=True, exist_ok=True)


def write_atomic(path, data: bytes | str):
    """Write `data` at `path` atomically: locally through `path.tmp` and one rename, on a store as one PUT;
    returns the location."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if is_url(path):
        crash_point(f"write:{name(path)}")
        fs, inner = filesystem(path)
        fs.pipe_file(inner, payload)
        return location(path)
    path = local(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    crash_point(f"write:{path.name}")
    os.replace(tmp, path)
    return path


def put_file(source: Path, dest, *, move: bool = True) -> None:
    """Put a finished local file at `dest` in one step: a rename on this disk (same folder: atomic), an upload on a
    store (the object appears only when the upload completes). move=True: `source` is gone afterwards; False:
    a copy (locally through a temporary name)."""
    crash_point(f"write:{name(dest)}")
    if is_url(dest):
        fs, inner = filesystem(dest)
        fs.put_file(str(source), inner)
        if move:
            source.unlink()
    elif move:
        os.replace(source, local(dest))
    else:
        tmp = local(dest).with_name(name(dest) + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, local(dest))


def put_folder(source: Path, dest, *, last: tuple[str, ...] = ()) -> list:
    """Publish a finished local folder at `dest`, file by file with put_file (each appears whole or not at all),
    the files named in `last` (relative paths) after every other one and in that order, so a reader that finds
    them finds everything before them. `source` is left as it is (the caller's temporary folder); returns the
    locations written."""
    names = [n for n in find(source) if n not in last] + [n for n in last if (Path(source) / n).is_file()]
    for relative in names:
        target = join(dest, relative)
        makedirs(parent(target))
        put_file(Path(source) / relative, target, move=False)
    return [join(dest, n) for n in names]


def write_json(path, data, *, indent: int | None = 1, sort_keys: bool = True):
    """`data` as JSON at `path`, atomically (see write_atomic)."""
    return write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys))


def key(loc) -> str:
    """A location as a comparable string (a local path resolved)."""
    return str(loc).rstrip("/") if is_url(loc) else str(local(loc).resolve())


def read_json(loc):
    return json.loads(read_text(loc))


def remove(loc, *, recursive: bool = False, missing_ok: bool = True) -> None:
    """Delete a file (or, recursive, a folder and what it holds)."""
    try:
        if is_url(loc):
            fs, path = filesystem(loc)
            fs.rm(path, recursive=recursive)
        elif recursive:
            shutil.rmtree(local(loc))
        else:
            local(loc).unlink()
    except FileNotFoundError:
        if not missing_ok:
            raise


def download(loc, dest: Path) -> Path:
    """A local copy of the file at `dest` (workers read their videos so: ffmpeg needs a file)."""
    if is_url(loc):
        fs, path = filesystem(loc)
        fs.get_file(path, str(dest))
    else:
        shutil.copyfile(local(loc), dest)
    return dest


@contextlib.contextmanager
def local_copy(loc) -> Iterator[Path]:
    """A file as a local path for the block: a local one as it is, a store's downloaded into a temporary folder
    under its own name (the suffix tells ffmpeg the format) and removed afterwards."""
    if not is_url(loc):
        yield local(loc)
        return
    with tempfile.TemporaryDirectory(prefix="posetalk_") as tmp:
        yield download(loc, Path(tmp) / name(loc))


def sha256_of(loc) -> str:
    digest = hashlib.sha256()
    with open_read(loc) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signature(loc) -> tuple:
    """What changes when a file is replaced (for caches of checks): size and mtime, or size and ETag."""
    if is_url(loc):
        fs, path = filesystem(loc)
        info = fs.info(path)
        return (str(loc), info.get("size"), info.get("ETag") or info.get("etag") or info.get("mtime"))
    stat = local(loc).stat()
    return (str(loc), stat.st_size, stat.st_mtime_ns)
