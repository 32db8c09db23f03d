"""Model files (a weights file, a custom model's `.py`) on devices that do not share the
host's disk.

The host names each file it built its model from by its path and its sha256 (`digests_of`).
A worker builds from its own copy (`localise`): the one in its file store
(`<store>/<sha256>/<name>`, which the hardware backend fills before a run, `stored_as`) or,
when it shares the host's disk (the emulator), the host's path itself if that file has the
same digest. A worker never loads a file whose digest differs from the host's: the model
digest check at start would fail later and less clearly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from halp.errors import BackendError
from halp.model.zoo import ModelSpec

WEIGHTS, FACTORY = "weights", "factory"
FILE_STORE = "files"  # a worker's store, in its working folder (`halp worker --files`)
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, per process


def file_digest(path: Path) -> str:
    """The sha256 of a file, computed once per version of it (a VGG-16 file is 0.5 GB)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
        digest = _digests[key] = sha.hexdigest()
    return digest


def model_files(spec: ModelSpec) -> dict[str, Path]:
    """The files `spec` is built from: its weights, and its factory when that is a `.py` file
    (a module name is imported from the device's Python path, as on the host)."""
    files = {}
    if spec.weights:
        files[WEIGHTS] = Path(spec.weights)
    if spec.factory_file is not None:
        files[FACTORY] = spec.factory_file
    return files


def digests_of(spec: ModelSpec) -> dict[str, str]:
    """Per model file of `spec` that exists here, its sha256 (what the host sends)."""
    return {role: file_digest(path) for role, path in model_files(spec).items()
            if path.is_file()}


def stored_as(store: str | Path, digest: str, name: str) -> Path:
    """Where a device's file store keeps the file of this digest."""
    return Path(store) / digest / name


def localise(spec: ModelSpec, store: Path | None) -> ModelSpec:
    """`spec` with each file the host named (`spec.digests`) replaced by this device's copy."""
    digests = dict(spec.digests)
    local = spec
    for role, path in model_files(spec).items():
        digest = digests.get(role)
        if digest is None:
            continue  # the host did not have it either: building says so
        copy = _copy_of(path, digest, store)
        local = (dataclasses.replace(local, weights=str(copy)) if role == WEIGHTS
                 else local.with_factory_file(copy))
    return local


def _copy_of(path: Path, digest: str, store: Path | None) -> Path:
    if store is not None:
        stored = stored_as(store, digest, path.name)
        if stored.is_file():
            return stored
    if path.is_file() and file_digest(path) == digest:
        return path
    where = f"in {store}" if store is not None else "(this worker has no file store)"
    raise BackendError(f"{path.name} (sha256 {digest[:12]}) is not on this device {where}; "
                       "`halp run --backend hw` copies it there before the workers start")
