"""Progress lines for long loops: count, rate and ETA on stderr, at most every few seconds."""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    def __init__(self, label: str, total: int, start: int = 0, min_interval_s: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.start_count = start
        self.start_time = time.perf_counter()
        self.last_print = -1e9
        self.min_interval_s = min_interval_s

    def rate(self, done: int) -> float:
        elapsed = time.perf_counter() - self.start_time
        return (done - self.start_count) / elapsed if elapsed > 0 else 0.0

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last_print < self.min_interval_s and done < self.total:
            return
        self.last_print = now
        rate = self.rate(done)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_text = format_duration(eta) if eta == eta else "?"
        print(
            f"{self.label} {done}/{self.total} {extra} {rate:.2f}/s eta {eta_text}".replace("  ", " "),
            file=sys.stderr,
            flush=True,
        )
