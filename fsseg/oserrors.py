"""One message for an operating-system error on a path: what failed, where, and what the user can do."""

from __future__ import annotations

import errno
import os

_ELSEWHERE = "point output_root (or --root, --out) to another folder"
_HINTS = {
    errno.ENOSPC: f"the disk is full: free space there or {_ELSEWHERE}",
    errno.EDQUOT: f"the disk quota is used up: free space there or {_ELSEWHERE}",
    errno.EROFS: f"the filesystem is read-only: {_ELSEWHERE}",
    errno.EACCES: f"permission denied: make the folder writable or {_ELSEWHERE}",
    errno.EPERM: f"operation not permitted: make the folder writable or {_ELSEWHERE}",
}


def describe_os_error(
    err: OSError, path: str | os.PathLike | None = None, action: str = "cannot write"
) -> str:
    """``ACTION PATH: STRERROR; HINT``, the path taken from ``err`` when not given (``action`` may be "")."""
    where = path if path is not None else err.filename
    reason = err.strerror or str(err)
    text = reason if where is None else f"{action} {where}: {reason}".lstrip()
    hint = _HINTS.get(err.errno)
    return f"{text}; {hint}" if hint else text
