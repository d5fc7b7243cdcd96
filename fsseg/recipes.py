"""Training recipes: the dataclass, a benchmark's recipe file, and the lookup of a config's recipe.

Two owners, two places:

* a method declares what its paper prescribes, as ``recipes = {"official": TrainRecipe(...)}`` in its
  torch-free declaration (``fsseg.declaration.MethodDeclaration.recipes``, which the network inherits);
* a benchmark declares the recipes it runs the methods with (the synthetic benchmark's short CPU
  recipes) in a YAML file next to its configs, ``config/recipes/<benchmark>.yaml``, named by the
  experiment config's ``train.recipe_file``. Its form::

      <recipe name>:            # what train.recipe names
        <method name>:          # a registered method
          <TrainRecipe field>: value   # unknown fields are refused

``train.recipe`` picks a name from either; a name declared by both is refused as ambiguous. A method that
learns nothing (``needs_training = False``) takes :data:`NOT_TRAINED` whatever the config names.

Kept free of torch: the workflow's plan reads recipe files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from fsseg.errors import ConfigError
from fsseg.schema import from_dict, opt
from fsseg.yaml_strict import DuplicateKeyError, load_unique


@dataclass(frozen=True)
class TrainRecipe:
    """How a method is trained; every field can be overridden from ``train.*`` config."""

    optimizer: str = opt("sgd", choices=("sgd", "adam", "adamw"))
    lr: float = opt(1e-3, gt=0)
    momentum: float = opt(0.9, ge=0, lt=1)
    weight_decay: float = opt(0.0, ge=0)
    schedule: str = opt("constant", choices=("constant", "step", "poly"))
    lr_steps: tuple[int, ...] = opt(())
    lr_gamma: float = opt(0.1, gt=0, le=1)
    poly_power: float = opt(0.9, gt=0)
    warmup: int = opt(0, ge=0)
    iterations: int = opt(1000, ge=0)
    batch_size: int = opt(4, ge=1)
    epochs: int | None = opt(None, ge=1)
    """Length in epochs of the fold's filtered training list; when set it decides the iterations."""
    augment: str = opt("flip_rot90", choices=("flip_rot90", "pfenet", "panet", "none"))
    """Training augmentation pipeline (``train.augment``): flip_rot90, pfenet, panet or none."""
    frozen_bn: str = opt("eval", choices=("eval", "batch_stats"))
    """BatchNorm of a frozen backbone in training (``backbone.frozen_bn``): eval or batch_stats."""
    description: str = opt("")
    """What the recipe is and where its values come from; no machine timings (they belong in READMEs,
    with the machine named)."""


NOT_TRAINED = TrainRecipe(iterations=0, description="nothing to train")
"""The recipe of a method that learns nothing (``needs_training = False``): zero iterations."""

RecipeBook = dict[str, dict[str, TrainRecipe]]
"""A benchmark recipe file: recipe name → method name → recipe."""


def read_recipe_file(path: str | Path, method_names: list[str] | None = None) -> RecipeBook:
    """The recipes of a benchmark's recipe file, validated; errors name the file and the key.

    ``method_names`` (the registered methods) makes a recipe for an unknown method an error.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise ConfigError(
            f"train.recipe_file: cannot read {path} ({err.strerror}); relative paths are read from the "
            f"working directory {Path.cwd()}"
        ) from None
    book = _read_cached(str(path), stat.st_mtime_ns, stat.st_size)
    if method_names is not None:
        for name, per_method in book.items():
            unknown = sorted(set(per_method) - set(method_names))
            if unknown:
                raise ConfigError(
                    f"recipe file {path}: {name}.{unknown[0]}: no method is registered under that name; "
                    f"known: {', '.join(sorted(method_names))}"
                )
    return book


@lru_cache(maxsize=16)
def _read_cached(path: str, _mtime_ns: int, _size: int) -> RecipeBook:
    try:
        data = load_unique(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"train.recipe_file: cannot read {path}: {err.strerror}") from None
    except DuplicateKeyError as err:
        raise ConfigError(f"recipe file {path}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"recipe file {path}: expected a mapping of recipe names, got {data!r}")
    book: RecipeBook = {}
    for name, per_method in data.items():
        if not isinstance(name, str) or not isinstance(per_method, dict) or not per_method:
            raise ConfigError(
                f"recipe file {path}: {name}: expected a mapping of method names to recipes, "
                f"got {per_method!r}"
            )
        book[name] = {
            method: from_dict(TrainRecipe, fields, f"recipe file {path}: {name}.{method}")
            for method, fields in per_method.items()
        }
    return book


def resolve_recipe(
    method_name: str,
    method_recipes: dict[str, TrainRecipe],
    needs_training: bool,
    name: str,
    recipe_file: str | None,
    method_names: list[str] | None = None,
) -> TrainRecipe:
    """The recipe ``name`` of a method: its own declaration, else the benchmark's recipe file.

    Errors name ``train.recipe`` / ``train.recipe_file`` and list the names that would work.
    """
    if not needs_training:
        return NOT_TRAINED
    book: RecipeBook = {}
    # A method's own recipe needs no file; a file that is there is read anyway, to refuse a name both declare.
    if recipe_file is not None and (name not in method_recipes or Path(recipe_file).is_file()):
        book = read_recipe_file(recipe_file, method_names)
    from_file = book.get(name, {}).get(method_name)
    if name in method_recipes:
        if from_file is not None:
            raise ConfigError(
                f"train.recipe: {name!r} of method {method_name!r} is declared by the method and by "
                f"{recipe_file}; rename the file's recipe"
            )
        return method_recipes[name]
    if from_file is not None:
        return from_file
    known = [f"{n} (method)" for n in method_recipes]
    known += [f"{n} ({recipe_file})" for n, per_method in book.items() if method_name in per_method]
    where = f"nor by {recipe_file}" if recipe_file is not None else "and train.recipe_file is null"
    raise ConfigError(
        f"train.recipe: unknown recipe {name!r} of {method_name!r}: not declared by the method {where}; "
        f"known: {', '.join(known) or 'none'}"
    )

