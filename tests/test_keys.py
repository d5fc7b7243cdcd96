"""The run and evaluation keys (fsseg/keys.py): every use derives from the one definition."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest

from fsseg import keys, paths
from fsseg.config import load_config, override_arguments, parse_override
from fsseg.records import EVALUATION_KEYS, RECORD_COLUMNS, SUMMARY_KEYS, evaluation_identity

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "config/experiments/synthetic.yaml"


@pytest.fixture
def repo_cwd(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_the_run_and_eval_folders_hold_every_key_field_and_only_known_fields():
    assert set(keys.RUN_KEY) <= _template_fields(paths.RUN_DIR)
    assert set(keys.EVAL_KEY) <= _template_fields(paths.EVAL_DIR)
    assert not set(keys.EVAL_KEY) - set(keys.RUN_KEY) & _template_fields(paths.RUN_DIR)
    for template in (paths.RUN_DIR, paths.EVAL_DIR, paths.MANIFEST, paths.PRETRAINED_BACKBONE):
        assert _template_fields(template) <= set(keys.BY_NAME), template


def test_record_columns_and_identity_follow_the_key(repo_cwd):
    cfg = load_config([EXPERIMENT], ["method.name=pfenet", "fold=2", "train.train_seed=3"])
    identity = evaluation_identity(cfg, "rid", shot=5, episode_seed=4, manifest_hash="abc")
    assert tuple(identity) == (*EVALUATION_KEYS, "manifest_hash")
    assert ("run_id", *keys.EVAL_KEY) == EVALUATION_KEYS
    assert RECORD_COLUMNS[: len(EVALUATION_KEYS)] == EVALUATION_KEYS
    assert identity["shot"] == 5 and identity["episode_seed"] == 4  # the manifest's, not eval.*
    assert identity["fold"] == 2 and identity["train_seed"] == 3 and identity["method"] == "pfenet"
    assert "backbone" not in SUMMARY_KEYS and set(SUMMARY_KEYS) < set(EVALUATION_KEYS)


def test_paths_of_a_config_are_its_key_values(repo_cwd):
    cfg = load_config([EXPERIMENT], ["method.name=dsmfnet", "method.variant=gpml_conv", "eval.shot=5"])
    values = keys.path_values(cfg)
    assert str(cfg.eval_dir) == paths.EVAL_DIR.format(**values)
    assert values["dataset"] == cfg.dataset_tag and values["backbone"] == cfg.backbone.name
    assert str(cfg.eval_dir) == (
        "results/synthetic/dsmfnet-gpml_conv/resnet18/fold0/shot1/seed0/eval/shot5_ep0_n100"
    )


def test_set_overrides_choose_exactly_the_given_grid_axes(repo_cwd):
    wanted = {
        "fold": 1,
        "train_shot": 5,
        "train_seed": 2,
        "shot": 5,
        "episode_seed": 3,
        "n_episodes": 40,
        "method": "pfenet",
        "variant": "prior_off",
        "backbone": "ignored",
        "dataset": "ignored",
    }
    overrides = keys.set_overrides(wanted)
    assert [o.split("=")[0] for o in overrides] == [keys.BY_NAME[n].source for n in keys.GRID_AXES]
    cfg = load_config([EXPERIMENT], overrides)
    names = tuple(n for n in keys.GRID_AXES if n != "n_episodes")
    assert keys.key_values(cfg, names) == {n: wanted[n] for n in names}
    assert cfg.eval.n_episodes == 40
    with pytest.raises(KeyError, match="'shots'"):
        keys.set_overrides({"shots": 1})


def test_override_arguments_read_back_as_the_cli_parses_them():
    text = override_arguments(["method.params.name=a b", "fold=1"])
    assert text == "--set 'method.params.name=a b' --set fold=1"
    assert parse_override("method.params.name=a b") == {"method": {"params": {"name": "a b"}}}


def test_wildcard_constraints_cover_every_key_field():
    constraints = keys.wildcard_constraints()
    assert set(keys.EVAL_KEY) <= set(constraints)
    assert constraints["n_episodes"] == r"\d+|all"


def test_keys_and_config_validation_import_no_torch(repo_cwd):
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from fsseg.config import load_config\n"
        "import fsseg.keys, fsseg.records, fsseg.paths\n"
        "from fsseg.registry import METHODS\n"
        "for name in METHODS.names():\n"
        "    decl = METHODS.declaration(name)\n"
        "    for variant in decl.variants:\n"
        f"        load_config([{EXPERIMENT!r}], [f'method.name={{name}}', f'method.variant={{variant}}'])\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
