"""The ``fsseg prepare <dataset>`` command's hooks, which a dataset adapter overrides.

``fsseg prepare <name>`` lets the adapter add its arguments to the sub-command's parser, locks the folder
:meth:`PrepareCommand.prepare_output` names, and runs :meth:`PrepareCommand.prepare_from_args`. A dataset
without a prepare step (a hand-made index) keeps these defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar

from fsseg.errors import DataError


class PrepareCommand:
    """Defaults of the prepare hooks: no arguments, no prepare step."""

    registry_name: ClassVar[str] = ""

    @classmethod
    def add_prepare_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of ``fsseg prepare <name>``; datasets without a prepare step add none."""

    @classmethod
    def prepare_from_args(cls, args: argparse.Namespace) -> None:
        raise DataError(f"dataset {cls.registry_name!r} has no prepare step")

    @classmethod
    def prepare_arguments(cls, dataset: Any) -> list[str]:
        """The ``fsseg prepare`` options an experiment config's ``dataset`` section fixes: where the prepared
        dataset goes (``dataset.root``) and what else of it the config states. The workflow passes these, so
        its ``prepare`` entry holds only the rest (where the release was unpacked, generation settings)."""
        return []

    @classmethod
    def prepare_output(cls, args: argparse.Namespace) -> Path:
        """The folder ``fsseg prepare`` writes for these arguments (locked while it runs)."""
        return Path(args.root)
