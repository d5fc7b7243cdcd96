"""Recipes: a method declares its paper's, a benchmark's recipe file the rest; files are validated."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fsseg.cli import main
from fsseg.config import load_config
from fsseg.engine.build import effective_recipe, run_id
from fsseg.errors import ConfigError
from fsseg.recipes import NOT_TRAINED, read_recipe_file
from fsseg.registry import METHODS

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "config" / "recipes" / "synthetic.yaml"
# A duration: a number followed by a unit of time ("0.24 s", "40 s a run", "3 min", "2 h", "12 ms").
_TIMING = re.compile(r"\d+(\.\d+)?\s*(ms|s|sec|seconds?|min|minutes?|h|hours?)\b")


def _config(toy_root: Path, *overrides: str, recipe_file: Path | None = SYNTHETIC):
    file = None if recipe_file is None else str(recipe_file)
    base = {"dataset": {"name": "toy", "root": str(toy_root)}, "train": {"recipe_file": file}}
    return load_config(base=base, overrides=list(overrides))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipes.yaml"
    path.write_text(text)
    return path


def test_methods_declare_only_their_papers_recipes() -> None:
    # a method declares published recipes only: its paper's ("official") and, for HSNet, the one SCCNet
    # trains it with on iSAID-5i; the benchmark's CPU recipes ("default") live in the recipe files
    papers = {"official", "sccnet_isaid"}
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert set(cls.recipes) <= papers and "default" not in cls.recipes, name
    with_recipes = {n for n in METHODS.names() if METHODS.get(n).recipes}
    assert with_recipes == {"panet", "pfenet", "dsmfnet", "hsnet", "bam"}
    assert all("official" in METHODS.get(n).recipes for n in with_recipes)
    colour_floor = METHODS.get("colour_floor")
    assert colour_floor.recipes == {} and not colour_floor.needs_training


def test_the_synthetic_benchmark_gives_every_trainable_method_its_cpu_recipe() -> None:
    book = read_recipe_file(SYNTHETIC, METHODS.names())
    assert set(book) == {"default"}
    trainable = {n for n in METHODS.names() if METHODS.get(n).needs_training}
    assert set(book["default"]) == trainable
    panet, pfenet, dsmfnet = (book["default"][m] for m in ("panet", "pfenet", "dsmfnet"))
    assert (panet.optimizer, panet.lr, panet.weight_decay, panet.iterations, panet.batch_size) == (
        "sgd", 2e-3, 5e-4, 100, 8
    )
    assert (pfenet.optimizer, pfenet.lr, pfenet.schedule, pfenet.iterations, pfenet.warmup) == (
        "adam", 3e-3, "poly", 300, 50
    )
    # DSMF-Net shares PFENet's optimizer settings; the control trains exactly as DSMF-Net's head
    assert replace(dsmfnet, iterations=300, batch_size=4, warmup=50, description="") == replace(
        pfenet, description=""
    )
    assert replace(book["default"]["query_only"], description="") == replace(dsmfnet, description="")
    # BAM's meta learner is PFENet-like and trains with PFENet's CPU recipe
    assert replace(book["default"]["bam"], description="") == replace(pfenet, description="")


def test_no_recipe_description_carries_a_timing() -> None:
    descriptions = {
        f"{name}/{recipe}": r.description
        for name in METHODS.names()
        for recipe, r in METHODS.get(name).recipes.items()
    }
    for path in sorted((REPO / "config" / "recipes").glob("*.yaml")):
        for recipe, per_method in read_recipe_file(path).items():
            descriptions.update({f"{path.name}:{recipe}.{m}": r.description for m, r in per_method.items()})
    assert len(descriptions) >= 7
    for where, text in descriptions.items():
        assert text, f"{where} has no description"
        assert not _TIMING.search(text), f"{where} carries a timing: {_TIMING.search(text).group(0)!r}"
    assert _TIMING.search("0.24 s per iteration") and _TIMING.search("≈ 40 s a run")  # the check can fail


def test_a_config_takes_the_benchmarks_recipe_or_the_methods_own(toy_root) -> None:
    book = read_recipe_file(SYNTHETIC)
    for method in ("panet", "pfenet", "dsmfnet", "query_only"):
        cfg = _config(toy_root, f"method.name={method}")
        assert effective_recipe(cfg) == book["default"][method]
    official = _config(toy_root, "method.name=pfenet", "train.recipe=official", recipe_file=None)
    assert effective_recipe(official) == METHODS.get("pfenet").recipes["official"]


def test_a_method_that_learns_nothing_accepts_any_recipe_name(toy_root) -> None:
    for recipe in ("default", "official", "anything"):
        cfg = _config(toy_root, "method.name=colour_floor", f"train.recipe={recipe}", recipe_file=None)
        assert effective_recipe(cfg) == NOT_TRAINED
    assert NOT_TRAINED.iterations == 0


def test_unknown_recipe_names_list_what_exists(toy_root) -> None:
    with pytest.raises(ConfigError, match=r"train\.recipe: unknown recipe 'fast' of 'panet'.*known: "
                       r"official \(method\), default \(.*synthetic\.yaml\)"):  # fmt: skip
        _config(toy_root, "train.recipe=fast")
    with pytest.raises(ConfigError, match=r"'default' of 'query_only'.*train\.recipe_file is null"):
        _config(toy_root, "method.name=query_only", recipe_file=None)
    missing = toy_root / "no_such_recipes.yaml"
    with pytest.raises(ConfigError, match=rf"train\.recipe_file: cannot read {re.escape(str(missing))}"):
        _config(toy_root, recipe_file=missing)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("default:\n  panet:\n    lr: 0.1\n    lrr: 0.2\n",
         r"recipes\.yaml: default\.panet: unknown key\(s\) 'lrr'; known keys: augment"),
        ("default:\n  panet:\n    optimizer: rmsprop\n",
         r"recipes\.yaml: default\.panet\.optimizer: 'rmsprop' is not one of 'sgd', 'adam', 'adamw'"),
        ("default:\n  panet:\n    iterations: -1\n",
         r"recipes\.yaml: default\.panet\.iterations: -1 is out of range"),
        ("default:\n  pnet:\n    lr: 0.1\n",
         r"recipes\.yaml: default\.pnet: no method is registered under that name; known: bam, colour_floor"),
        ("default:\n  panet:\n    lr: 0.1\n    lr: 0.2\n", r"recipes\.yaml: duplicate key 'lr' on line 4"),
        ("- panet\n", r"recipes\.yaml: expected a mapping of recipe names"),
        ("default: sgd\n", r"recipes\.yaml: default: expected a mapping of method names to recipes"),
    ],
)  # fmt: skip
def test_a_bad_recipe_file_is_refused_naming_the_file_and_key(toy_root, tmp_path, text, error) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=error):
        _config(toy_root, recipe_file=path)


def test_a_recipe_name_both_the_method_and_the_file_declare_is_ambiguous(toy_root, tmp_path) -> None:
    path = _write(tmp_path, "official:\n  panet:\n    lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'official' of method 'panet' is declared by the method and by"):
        _config(toy_root, "train.recipe=official", recipe_file=path)


def test_the_recipe_files_location_is_not_part_of_the_run_identity(toy_root, tmp_path) -> None:
    copy = tmp_path / "elsewhere.yaml"
    shutil.copy(SYNTHETIC, copy)
    assert run_id(_config(toy_root)) == run_id(_config(toy_root, recipe_file=copy))
    assert run_id(_config(toy_root)) != run_id(_config(toy_root, "train.recipe=official"))
    # but its values are: an edited recipe file makes another run
    edited = tmp_path / "edited.yaml"
    edited.write_text(SYNTHETIC.read_text().replace("lr: 2.0e-3", "lr: 4.0e-3", 1))  # PANet's
    assert run_id(_config(toy_root)) != run_id(_config(toy_root, recipe_file=edited))


def test_fsseg_list_prints_variants_and_both_kinds_of_recipes(tmp_path, capsys) -> None:
    assert main(["list", "--recipe-files", str(SYNTHETIC)]) == 0
    out = capsys.readouterr().out
    assert f"panet: variants default, no_align; recipes official (method), default ({SYNTHETIC})" in out
    assert f"query_only: variants default; recipes default ({SYNTHETIC})" in out
    assert "colour_floor: variants default; nothing to train" in out
    bad = _write(tmp_path, "default:\n  panet:\n    lrr: 1\n")
    assert main(["list", "--recipe-files", str(bad)]) == 2
