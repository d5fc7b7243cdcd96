"""A training killed part-way and rerun, next to the same training unbroken (the resume tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsseg.engine.train import train


class Killed(Exception):
    """Stands for a kill: raised from the training's per-iteration hook."""


def killed_and_resumed(
    toy_config: Callable[..., Any],
    overrides: tuple[str, ...],
    tmp_path: Path,
    kill_at: int = 5,
    after_kill: Callable[[Any], None] | None = None,
) -> tuple[Path, Path]:
    """Train ``overrides`` unbroken under ``tmp_path/a``; train it again under ``tmp_path/b``, killed
    after iteration ``kill_at``, call ``after_kill`` with that run's config (to look at what the kill
    left), and rerun it there. Returns the unbroken run folder and the resumed one."""
    full = train(toy_config(*overrides, f"output_root={tmp_path}/a"))
    cfg = toy_config(*overrides, f"output_root={tmp_path}/b")

    def kill(iteration: int) -> None:
        if iteration == kill_at:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, on_iteration=kill)
    if after_kill is not None:
        after_kill(cfg)
    return full, train(cfg)
