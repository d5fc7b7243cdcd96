"""The folders methods/ and datasets/ install as ``fsseg_methods`` and ``fsseg_datasets``, so the project
shares an environment with Hugging Face ``datasets`` (pyproject.toml ``[tool.setuptools] package-dir``).

Fast: no source imports the old top-level names, and setup.py packages every folder under its import
name. Slow (``-m install``): a fresh virtual environment holding Hugging Face ``datasets`` and this project,
installed as a wheel and as an editable install, imports both in one interpreter.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

from fsseg.registry import DATASETS, METHODS, Registry

REPO = Path(__file__).resolve().parents[1]
OLD_NAMES = ("methods", "datasets")
# Hugging Face datasets, pinned: the release that the slow test was written against.
HF_DATASETS = "datasets==5.2.0"

_OLD_DOTTED = re.compile(r"^(?:methods|datasets)(?:\.\w+)*$")
# An import statement in text that is not a Python module: Snakemake files, shell scripts, Markdown.
_OLD_IMPORT_LINE = re.compile(
    r"(?<![\w.])(?:from\s+(?:methods|datasets)(?:\.\w+)*\s+import\b|import\s+(?:methods|datasets)\b)"
)
_IMPORT_FUNCTIONS = {"import_module", "__import__", "find_spec", "Registry"}
_SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".ci-venv",
    "build",
    "__pycache__",
    ".snakemake",
    ".pytest_cache",
    ".ruff_cache",
}


def _load_setup_py() -> ModuleType:
    """setup.py as a module, without running ``setup()`` (that runs under ``__name__ == "__main__"``)."""
    spec = importlib.util.spec_from_file_location("fsseg_setup_py", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project_files(*patterns: str) -> list[Path]:
    found = []
    for pattern in patterns:
        for path in REPO.rglob(pattern):
            parts = path.relative_to(REPO).parts
            if not any(
                part in _SKIPPED_DIRS or part.startswith(("results", "reports", "data"))
                for part in parts[:-1]
            ):
                found.append(path)
    return sorted(set(found))


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _old_imports_in_python(path: Path) -> list[str]:
    """file:line of every import of an old name: statements, and module names passed as strings."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in _IMPORT_FUNCTIONS:
                names = [
                    arg.value
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
            # monkeypatch.setattr("methods.x.y.attr", ...) names a module path too
            elif called == "setattr" and node.args and isinstance(node.args[0], ast.Constant):
                value = node.args[0].value
                names = [value] if isinstance(value, str) and "." in value else []
        if any(name.split(".")[0] in OLD_NAMES and _OLD_DOTTED.match(name) for name in names):
            hits.append(f"{_shown(path)}:{node.lineno}")
    return hits


def _old_imports_in_text(path: Path) -> list[str]:
    return [
        f"{_shown(path)}:{number}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _OLD_IMPORT_LINE.search(line)
    ]


def test_no_source_imports_the_old_top_level_names():
    python = _project_files("*.py")
    text = [*_project_files("*.smk", "Snakefile", "*.sh", "*.md"), REPO / ".ci" / "run"]
    assert REPO / "fsseg" / "registry.py" in python and REPO / "methods" / "README.md" in text
    hits = [hit for path in python for hit in _old_imports_in_python(path)]
    hits += [hit for path in text if path.is_file() for hit in _old_imports_in_text(path)]
    assert hits == [], f"imports of the old names {OLD_NAMES} (now fsseg_methods / fsseg_datasets): {hits}"


def test_the_scan_finds_old_imports(tmp_path):
    # The scanner itself: each form it must catch, and the new names it must let through.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import datasets\nfrom methods.panet import PANet\nimport importlib\n"
        "importlib.import_module('datasets.synthetic')\nmonkeypatch.setattr('methods.pfenet.model.f', 1)\n"
        "import fsseg_datasets\nfrom fsseg_methods import panet\nx = {'datasets': 1}\n"
    )
    assert _old_imports_in_python(sample) == [f"{sample}:{line}" for line in (1, 2, 4, 5)]
    markdown = tmp_path / "x.md"
    markdown.write_text(
        "4. Add `from methods import <name>` to `methods/__init__.py`.\nmethods/ holds the methods\n"
        "    import datasets.synthetic\nfrom fsseg_methods import panet\n"
    )
    assert _old_imports_in_text(markdown) == [f"{markdown}:1", f"{markdown}:3"]


def test_setup_py_packages_every_registered_method_and_dataset_under_its_import_name():
    setup_py = _load_setup_py()
    assert setup_py.package_dirs() == {
        "fsseg": "fsseg",
        "fsseg_methods": "methods",
        "fsseg_datasets": "datasets",
    }
    packages = setup_py.packages()
    assert not [name for name in packages if name.split(".")[0] in OLD_NAMES]
    assert "tests" not in {name.split(".")[0] for name in packages}
    registered = [METHODS.get(name) for name in METHODS.names()] + [
        DATASETS.get(name) for name in DATASETS.names()
    ]
    shipped = [cls for cls in registered if not cls.__module__.startswith("tests.")]  # tests register toys
    assert len(shipped) >= 8  # five methods, three datasets
    for cls in shipped:
        package = cls.__module__.rsplit(".", 1)[0]  # fsseg_methods.panet.model -> fsseg_methods.panet
        assert package in packages, f"{cls.__name__} ({cls.__module__}) is not in setup.py's packages"
    assert {"fsseg.engine", "fsseg.data", "fsseg_methods", "fsseg_datasets.synthetic"} <= set(packages)


def test_setup_py_refuses_a_build_folder_of_the_old_layout(tmp_path):
    setup_py = _load_setup_py()
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "build" / "lib" / "fsseg_methods").mkdir(parents=True)
    setup_py.check_build_folder(tmp_path)  # the current layout's names are fine
    (tmp_path / "build" / "lib" / "methods").mkdir()
    with pytest.raises(SystemExit, match=r"build/lib holds methods from an older build.*delete .*build"):
        setup_py.check_build_folder(tmp_path)


# --- the slow test: a fresh environment with Hugging Face datasets and this project -------------------------

# Run in the new environment: Hugging Face's datasets and this project's packages in one interpreter.
_CHECK = """
import importlib.util, json
import datasets
import fsseg_datasets, fsseg_methods
from fsseg.registry import DATASETS, METHODS
print(json.dumps({
    "hf_datasets": datasets.__version__, "hf_file": datasets.__file__,
    "has_load_dataset": callable(getattr(datasets, "load_dataset", None)),
    "fsseg_methods": fsseg_methods.__file__, "fsseg_datasets": fsseg_datasets.__file__,
    "methods": METHODS.names(), "datasets": DATASETS.names(),
    "methods_importable": importlib.util.find_spec("methods") is not None,
}))
"""


def _shipped(registry: Registry) -> list[str]:
    """The registered names that the project ships (the tests register toys of their own)."""
    return [name for name in registry.names() if not registry.get(name).__module__.startswith("tests.")]


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"}
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _environment_view(dest: Path) -> Path:
    """This environment's site-packages without this project (and without any Hugging Face datasets).

    The new environment reaches torch and the other dependencies through it (a .pth line), so nothing big
    is installed again; this project's own install and its editable finder stay out of sight, so the
    imports below can only come from what the test installs.
    """
    dest.mkdir()
    hidden = re.compile(
        r"^(fsseg|fsseg_methods|fsseg_datasets|methods|datasets|__editable__.*fsseg.*)([-.].*)?$", re.I
    )
    for folder in [Path(p) for p in site.getsitepackages()]:
        for entry in folder.iterdir():
            if not hidden.match(entry.name) and not (dest / entry.name).exists():
                (dest / entry.name).symlink_to(entry)
    return dest


def _source_copy(dest: Path) -> Path:
    """What a release of the project holds, copied, so that building writes nothing into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("fsseg", "methods", "datasets"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, dest / name)
    return dest


def _fresh_venv(path: Path, view: Path) -> Path:
    _checked(_run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent))
    python = path / "bin" / "python"
    purelib = _checked(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], path)
    )
    Path(purelib.strip(), "_fsseg_test_dependencies.pth").write_text(f"{view}\n")
    return python


@pytest.mark.slow
@pytest.mark.install
def test_installs_next_to_hugging_face_datasets(tmp_path):
    assert sysconfig.get_path("purelib")  # a normal CPython layout, which venv and .pth files rely on
    pip = [sys.executable, "-m", "pip"]
    download = _run(
        [*pip, "download", "--no-deps", "--dest", str(tmp_path / "dl"), HF_DATASETS], tmp_path, 120
    )
    if download.returncode != 0:
        last = (download.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"the package index is unreachable: pip download {HF_DATASETS} failed: {last}")

    source = _source_copy(tmp_path / "src")
    view = _environment_view(tmp_path / "view")
    wheel_dir = tmp_path / "wheels"
    _checked(
        _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(source)], source)
    )
    [wheel] = wheel_dir.glob("fsseg-*.whl")

    import zipfile

    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if ".dist-info" not in name}
    assert top_level == {"fsseg", "fsseg_methods", "fsseg_datasets"}

    for mode, target in [("wheel", [str(wheel)]), ("editable", ["--no-build-isolation", "-e", str(source)])]:
        python = _fresh_venv(tmp_path / f"venv-{mode}", view)
        into = [*pip, "--python", str(python), "install", "--quiet"]
        _checked(_run([*into, HF_DATASETS], tmp_path))
        _checked(_run([*into, "--no-deps", *target], tmp_path))
        report = json.loads(_checked(_run([str(python), "-c", _CHECK], tmp_path)).strip().splitlines()[-1])

        assert report["hf_datasets"] == HF_DATASETS.split("==")[1], mode
        assert report["has_load_dataset"], (
            f"{mode}: `import datasets` is not Hugging Face's: {report['hf_file']}"
        )
        assert Path(report["hf_file"]).is_relative_to(tmp_path / f"venv-{mode}"), report["hf_file"]
        assert report["methods"] == _shipped(METHODS) and report["datasets"] == _shipped(DATASETS), mode
        assert not report["methods_importable"], f"{mode}: the old top-level name `methods` is importable"
        home = tmp_path / f"venv-{mode}" if mode == "wheel" else source
        for package, folder in [("fsseg_methods", "methods"), ("fsseg_datasets", "datasets")]:
            where = Path(report[package])
            assert where.is_relative_to(home), f"{mode}: {package} imported from {where}"
            if mode == "editable":
                assert where.parent == source / folder, f"{mode}: {package} imported from {where}"
