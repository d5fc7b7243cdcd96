"""Run the ``fsseg`` command line of one source tree, whatever fsseg is installed (``fsseg bench --against``).

Started as a script (``python -P tree_bootstrap.py SPEC.json -- ARGS...``), it imports nothing of
the project before it has put, at the front of ``sys.meta_path``, a finder that maps each top-level
package of the tree (``fsseg``, the method and dataset packages, under whatever names the tree's
``pyproject.toml`` gives them) to the tree's own folder. ``PYTHONPATH`` alone is not enough: an
editable install maps package names to the installed checkout through a finder of its own, and a
package name the tree has but the installed checkout lacks would be taken from the wrong place or not
at all. The spec file (JSON) holds ``{"root": TREE, "packages": {name: folder}, "provenance": FILE,
"threads": N, "seed": S}``; the caller also sets
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to N, before torch starts. After the command, every
imported module's file is written to ``provenance`` (JSON) so the caller can check that the tree
it meant, and no other, was run.

Standard library only until the tree's own code is imported: this file belongs to the *calling*
tree and runs in a process where the calling tree's packages must not be imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType


class TreeFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level packages ``packages`` (name → folder) in their folders, before any other finder.

    Sub-modules need no help: they are looked up on the parent package's ``__path__``, the tree's folder.
    """

    def __init__(self, packages: dict[str, str]) -> None:
        self.packages = packages

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.packages.get(fullname)
        if folder is None:
            return None
        init = Path(folder) / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[folder])


def imported_files() -> dict[str, str]:
    """Module name → resolved file of every imported module that has a file, this script excepted
    (it is the caller's, run as ``__main__``, and holds no code of the timed tree)."""
    itself = Path(__file__).resolve()
    files = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() != itself:
            files[name] = str(Path(file).resolve())
    return files


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -P tree_bootstrap.py SPEC.json -- FSSEG_ARGS...", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    sys.meta_path.insert(0, TreeFinder(spec["packages"]))
    sys.path.insert(0, spec["root"])  # top-level modules of the tree that are not packages, if any

    import random

    import torch

    torch.set_num_threads(int(spec["threads"]))
    random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])

    from fsseg.cli import main as fsseg_main  # the tree's own command line

    code = fsseg_main(argv[2:])
    document = {"root": spec["root"], "exit_code": code, "modules": imported_files()}
    Path(spec["provenance"]).write_text(json.dumps(document))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
