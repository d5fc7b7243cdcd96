"""Worker process pools whose workers die with their parent.

A ``ProcessPoolExecutor`` worker blocks reading its task queue; if the parent is killed with
SIGKILL, nothing tells it to stop, and it lives on. Each worker here (1) asks Linux to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes) and (2) as the portable
fallback, runs a daemon thread that exits the process once its parent pid has changed (the orphan
was re-parented). Workers write files atomically, so one killed half-way leaves no partial file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
#: Seconds between the fallback's parent checks.
POLL_SECONDS = 0.5


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # no cleanup to run: every file is written atomically
        time.sleep(POLL_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when the process ``parent_pid`` dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()


def worker_pool(max_workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers end when this process ends, however it ends."""
    return ProcessPoolExecutor(max_workers=max_workers, initializer=die_with_parent, initargs=(os.getpid(),))
