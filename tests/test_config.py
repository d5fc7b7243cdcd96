import pytest

from fsseg.config import load_config
from fsseg.errors import ConfigError, RegistryError


def test_defaults_resolve_method_params():
    cfg = load_config()
    assert cfg.method.name == "panet"
    assert cfg.method.params["align_weight"] == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.itrations=5", r"config\.train: unknown key\(s\) 'itrations'"),
        ("train.iterations=-1", r"config\.train\.iterations: -1 is out of range \(must be >= 0\)"),
        ("train.lr=fast", r"config\.train\.lr: expected .*got 'fast'"),
        (
            "dataset.train_filter=drop",
            r"config\.dataset\.train_filter: expected one of 'none', 'remove_novel', got 'drop'",
        ),
        ("method.params.align_weight=-2", r"config\.method\.params\.align_weight: -2.0 is out of range"),
        ("method.params.alignn=true", r"config\.method\.params: unknown key\(s\) 'alignn'"),
        ("method.variant=nope", r"unknown variant 'nope' of 'panet'; known: default, no_align"),
        ("train.recipe=nope", r"unknown recipe 'nope'"),
        ("fold=7", r"config\.fold: 7 is out of range; dataset 'toy' has 2 folds"),
        ("train.augment=3", r"config\.train\.augment: expected one of 'flip_rot90', .* or null, got 3"),
        ("train.augment=rot", r"config\.train\.augment: expected one of .*'pfenet', 'panet'.*got 'rot'"),
        ("train.epochs=0", r"config\.train\.epochs: 0 is out of range \(must be >= 1\)"),
        ("backbone.frozen_bn=train", r"config\.backbone\.frozen_bn: expected one of 'eval', 'batch_stats'"),
        ("eval.sampler=random", r"config\.eval\.sampler: expected one of 'balanced', 'pfenet', 'all_pairs'"),
        ("eval.n_episodes=all", r"config\.eval\.n_episodes: 'all' does not fit config\.eval\.sampler"),
        ("protocol=C", r"config\.protocol: 'C' is not one of 'H', 'B'"),
    ],
)
def test_bad_values_name_key_and_value(override, message):
    base = {"dataset": {"name": "toy"}}
    with pytest.raises(ConfigError, match=message):
        load_config(base=base, overrides=[override])


def test_unknown_method_lists_known():
    with pytest.raises(RegistryError, match=r"unknown method 'pnet'; known methods: .*panet"):
        load_config(overrides=["method.name=pnet"])


def test_files_compose_and_bad_yaml(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train:\n  iterations: 5\n  lr: 0.1\n")
    b = tmp_path / "b.yaml"
    b.write_text("train:\n  lr: 0.2\n")
    cfg = load_config([a, b], ["train.batch_size=3"])
    assert (cfg.train.iterations, cfg.train.lr, cfg.train.batch_size) == (5, 0.2, 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config([bad])
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config([tmp_path / "missing.yaml"])


def test_unknown_dataset_lists_known():
    with pytest.raises(RegistryError, match=r"unknown dataset 'isaid'; known datasets: .*isaid5i.*synthetic"):
        load_config(overrides=["dataset.name=isaid"])


def test_describe_states_what_fixes_the_validation_episodes():
    from fsseg.config import describe_schema

    lines = {line.split(" = ")[0]: line for line in describe_schema()}
    assert "no eval.* key" in lines["train.selection"]
    assert "val split" in lines["train.val_episodes"] and "train.shot" in lines["train.val_episodes"]
    assert lines["train.val_episode_seed"].startswith("train.val_episode_seed = 12345  # ")
    with pytest.raises(ConfigError, match=r"config\.train: unknown key\(s\) 'val_shot'"):
        load_config(base={"dataset": {"name": "toy"}}, overrides=["train.val_shot=2"])
