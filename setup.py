"""Lists the packages under their import names; everything else is in pyproject.toml.

pyproject.toml's ``[tool.setuptools] package-dir`` maps each import name to its folder
(``fsseg_methods`` → ``methods/``). Its ``packages.find`` cannot rename what it finds, so this file
finds the sub-packages of each folder and lists them under its import name: a new method folder needs
no edit here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """Import name → folder, from ``[tool.setuptools] package-dir`` of ``root/pyproject.toml``."""
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def packages(root: Path = ROOT) -> list[str]:
    """Every package of every mapped folder, named by its import name."""
    return [
        package
        for name, folder in package_dirs(root).items()
        for package in [name, *(f"{name}.{sub}" for sub in find_packages(str(root / folder)))]
    ]


def check_build_folder(root: Path = ROOT) -> None:
    """Refuse a ``build/lib`` that holds packages of an older layout.

    setuptools copies the whole of ``build/lib`` into the wheel, so a ``build/lib/methods`` or
    ``build/lib/datasets`` left by a build from before the rename would install the colliding names
    again.
    """
    build_lib = root / "build" / "lib"
    stale = sorted(p.name for p in build_lib.glob("*") if p.name not in package_dirs(root))
    if stale:
        raise SystemExit(
            f"{build_lib} holds {', '.join(stale)} from an older build, which would go into the wheel; "
            f"delete {root / 'build'} and install again"
        )


if __name__ == "__main__":
    check_build_folder()
    setup(packages=packages())
