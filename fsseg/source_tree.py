"""Source trees of fsseg: the checkout that holds the running code, a git revision exported from it,
the import names of a tree's packages, and the check that a process ran the code of the tree it meant.

A tree is run without installing it through :mod:`fsseg.tree_bootstrap`, which maps each import name
of :func:`tree_packages` to the tree's own folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from fsseg.errors import ConfigError, FssegError


class SourceTreeError(FssegError):
    """A source tree cannot be exported or mapped, or a process ran code of another tree."""


@dataclass(frozen=True)
class SourceTree:
    """A source tree of fsseg to time: a label for tables, its root folder and its top-level packages."""

    label: str
    root: Path
    packages: dict[str, str]


# --- trees ----------------------------------------------------------------------------------------
def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)


def current_repository() -> Path:
    """The root of the git work tree that holds the running ``fsseg`` package."""
    import fsseg

    package_dir = Path(fsseg.__file__).resolve().parent
    done = _git(package_dir, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise ConfigError(
            f"--against needs fsseg run from a git checkout; {package_dir} is not in one "
            f"({done.stderr.strip() or 'git rev-parse failed'})"
        )
    return Path(done.stdout.strip()).resolve()


def resolve_commit(repository: Path, rev: str) -> str:
    """The full commit hash of ``rev`` in ``repository``; a clear error if it names no commit."""
    done = _git(repository, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigError(f"--against {rev!r} names no commit of the repository {repository}")
    return done.stdout.strip()


def describe_worktree(repository: Path) -> str:
    """``<HEAD commit>`` plus ``+uncommitted`` when the work tree differs from it (edited, new or
    deleted files that git does not ignore)."""
    head = _git(repository, "rev-parse", "HEAD").stdout.strip() or "unknown"
    dirty = _git(repository, "status", "--porcelain").stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def export_commit(repository: Path, commit: str, destination: Path) -> Path:
    """Write the files of ``commit`` (``git archive``) into ``destination``; returns ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination.with_suffix(".tar")
    done = _git(repository, "archive", "--format=tar", "-o", str(archive), commit)
    if done.returncode != 0:
        raise SourceTreeError(f"git archive {commit} failed: {done.stderr.strip()}")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
    finally:
        archive.unlink(missing_ok=True)
    return destination


def tree_packages(root: Path) -> dict[str, str]:
    """Top-level import name → folder of every package the tree's ``pyproject.toml`` installs.

    Reads ``[tool.setuptools]``: ``package-dir`` (import names of folders, and ``""`` for the folder
    packages are found in); then the top-level names of an explicit ``packages`` list, or the folders
    ``packages.find`` (``where``/``include``/``exclude``) selects; with neither, the names of
    ``package-dir`` alone (a tree whose setup.py lists its packages), or, without those either, every
    package folder at the root. Raises when the tree has no ``fsseg`` package.
    """
    root = root.resolve()
    pyproject = root / "pyproject.toml"
    setuptools: dict[str, Any] = {}
    if pyproject.is_file():
        try:
            setuptools = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools", {})
        except tomllib.TOMLDecodeError as err:
            raise SourceTreeError(f"{pyproject}: not valid TOML ({err})") from err
    package_dir: dict[str, str] = dict(setuptools.get("package-dir", {}))
    base = root / package_dir.pop("", ".")
    named = {name: str((root / folder).resolve()) for name, folder in package_dir.items() if "." not in name}
    listed = setuptools.get("packages")
    packages: dict[str, str] = {}
    if isinstance(listed, list):
        packages = {name.split(".")[0]: str(base / name.split(".")[0]) for name in listed}
    elif isinstance(listed, dict) or not named:
        find = listed.get("find", {}) if isinstance(listed, dict) else {}
        include, exclude = find.get("include", ["*"]), find.get("exclude", [])
        for where in find.get("where", ["."]):
            folder = base / where
            for child in sorted(folder.iterdir()) if folder.is_dir() else []:
                wanted = any(fnmatch(child.name, p) for p in include)
                unwanted = any(fnmatch(child.name, p) for p in exclude)
                if (child / "__init__.py").is_file() and wanted and not unwanted:
                    packages[child.name] = str(child)
    packages.update(named)
    packages = {name: folder for name, folder in packages.items() if (Path(folder) / "__init__.py").is_file()}
    if "fsseg" not in packages:
        raise SourceTreeError(f"{root} has no fsseg package (looked for {base / 'fsseg' / '__init__.py'})")
    return dict(sorted(packages.items()))


# --- provenance ------------------------------------------------------------------------------------
def check_provenance(tree: SourceTree, modules: dict[str, str], others: Sequence[SourceTree]) -> None:
    """Raise unless ``fsseg`` came from ``tree`` and no imported module is code of another tree.

    A tree's code is what lies in the folders of its packages (a virtual environment inside the
    checkout is not). A file belongs to the most specific such folder that holds it, so the check
    holds even when one tree lies inside the other (a ``TMPDIR`` inside the checkout).
    """
    folders = {Path(folder).resolve(): tree for folder in tree.packages.values()}
    for other in others:
        folders.update({Path(folder).resolve(): other for folder in other.packages.values()})

    def owner(file: str) -> SourceTree | None:
        holders = [folder for folder in folders if Path(file).is_relative_to(folder)]
        return folders[max(holders, key=lambda f: len(f.parts))] if holders else None

    fsseg_file = modules.get("fsseg")
    if fsseg_file is None or owner(fsseg_file) is not tree:
        raise SourceTreeError(
            f"{tree.label}: the bench process imported fsseg from {fsseg_file}, "
            f"not from {tree.packages['fsseg']}"
        )
    strays = sorted(name for name, file in modules.items() if owner(file) not in (None, tree))
    if strays:
        places = sorted({str(owner(modules[name]).root) for name in strays})  # type: ignore[union-attr]
        raise SourceTreeError(
            f"{tree.label}: the bench process imported {', '.join(strays[:5])} from {', '.join(places)} "
            f"instead of {tree.root}"
        )


# --- running a tree -------------------------------------------------------------------------------
def run_tree_cli(
    tree: SourceTree, argv: Sequence[str], threads: int, seed: int, workdir: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, str] | None]:
    """Run ``fsseg ARGV`` with the code of ``tree`` in a fresh process (see :mod:`fsseg.tree_bootstrap`).

    ``threads`` pins ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``torch.set_num_threads``; ``seed``
    seeds Python's and torch's generators first. Returns the finished process (output captured) and
    the files of the modules it imported (``None`` when it ended before writing them); pass them to
    :func:`check_provenance`. The current working folder is kept, so relative paths in ``argv`` mean
    the same for every tree.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    handle, spec_name = tempfile.mkstemp(prefix="tree.", suffix=".spec.json", dir=workdir)
    os.close(handle)
    spec_file = Path(spec_name)
    provenance = spec_file.with_name(spec_file.name.replace(".spec.json", ".provenance.json"))
    spec = {
        "root": str(tree.root),
        "packages": tree.packages,
        "provenance": str(provenance),
        "threads": threads,
        "seed": seed,
    }
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    bootstrap = Path(__file__).resolve().with_name("tree_bootstrap.py")
    # -P: neither the bootstrap's folder (the calling tree's fsseg/) nor the working folder goes on sys.path
    command = [sys.executable, "-P", str(bootstrap), str(spec_file), "--", *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    modules = json.loads(provenance.read_text())["modules"] if provenance.is_file() else None
    return done, modules
