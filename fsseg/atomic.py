"""Atomic file writes: write to a temporary file in the target folder, then rename over the target.

A reader (or a job killed half-way) therefore never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from fsseg.errors import OutputError
from fsseg.oserrors import describe_os_error

#: Temporary files of :func:`atomic_open` are named ``.<target name>.<random>.tmp``.
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it is (fsynced and) renamed to ``path``.

    The rename alone guarantees that a killed process never leaves a half-written file under the
    final name; ``fsync`` adds durability across a power loss. Bulk writers of many small files
    pass ``fsync=False`` and call ``os.sync()`` once before writing the file that marks completion.
    An operating-system error (disk full, read-only folder, no permission) removes the temporary
    file and raises :class:`~fsseg.errors.OutputError` naming ``path``; a file already at ``path``
    is left as it was.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        if isinstance(err, OSError):
            raise OutputError(describe_os_error(err, path)) from err
        raise


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files that writes killed half-way left in ``folder``.

    Call only while holding the folder's lock (:mod:`fsseg.locks`): then no other process is
    writing one of them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    stale = [p for p in candidates if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(
            f"fsseg: removed {len(stale)} temporary file(s) left by an interrupted write in {folder}",
            file=sys.stderr,
        )
    return stale


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace variation: the basis of every content hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
