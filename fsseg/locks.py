"""One writer per output folder: an exclusive ``flock`` on a lock file next to the folder.

``fsseg train`` locks its run folder, ``fsseg evaluate`` its evaluation folder and ``fsseg prepare``
the prepared dataset's folder. A second process on the same folder fails at once with a message
naming the holder (pid, host, since when). The kernel drops a ``flock`` when its process dies,
however it dies, so a lock left by a killed process is simply taken over: the file stays, the lock
does not. The file lies *next to* the folder (``.<name>.lock`` in its parent) so that deleting the
folder (``--replace-changed``, ``--restart``) never deletes a lock that is held.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from fsseg.errors import LockedError, OutputError
from fsseg.oserrors import describe_os_error


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _holder(handle_path: Path) -> str:
    """Who holds the lock, as written in the lock file by the holder ("unknown" if unreadable)."""
    try:
        info = json.loads(handle_path.read_text())
        return f"pid {info['pid']} on host {info['host']} (running `{info['command']}` since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its details are not readable yet)"


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    for folder in path.parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _acquire(path: Path, folder: Path) -> int:
    """Open and ``flock`` the lock file; retry if the file was replaced between open and lock.

    A holder unlinks its lock file when it is done; a process that opened the old file just before
    that would otherwise hold a lock on a file nobody else can see.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{folder} is in use by {_holder(path)}; wait for it to finish or stop that process "
                f"(its lock {path} is released as soon as it ends)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` for the block; raise :class:`LockedError` if it is taken.

    ``command`` (e.g. ``"fsseg train"``) is written into the lock file for the message others get.
    The lock file is removed on exit, and so are folders created for it that stayed empty, so a
    command refused for bad input leaves the disk as it found it.
    """
    folder = Path(folder)
    path = lock_path(folder)
    created = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, folder)
    except OSError as err:
        raise OutputError(describe_os_error(err, path, "cannot create the lock file")) from err
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        # Best effort: the holder's details are for the message others get, not for the lock itself.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: see _acquire
        os.close(fd)  # releases the flock
        for parent in created:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if still empty
