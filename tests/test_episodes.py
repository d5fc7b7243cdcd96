import json

import pytest
import torch
from torch.utils.data import DataLoader

from fsseg.data.adapter import open_dataset
from fsseg.data.episodes import EpisodeManifest, TrainEpisodeSampler, build_test_manifest
from fsseg.data.loading import ManifestEpisodes, collate_episodes
from fsseg.errors import DataError, ManifestError


@pytest.fixture
def toy(toy_root):
    return open_dataset("toy", toy_root)


def test_manifest_is_deterministic_and_hash_stable(toy, tmp_path):
    a = build_test_manifest(toy, fold=0, shot=1, episode_seed=3, n_episodes=30)
    b = build_test_manifest(toy, fold=0, shot=1, episode_seed=3, n_episodes=30)
    assert a.episodes == b.episodes and a.content_hash == b.content_hash
    c = build_test_manifest(toy, fold=0, shot=1, episode_seed=4, n_episodes=30)
    assert c.content_hash != a.content_hash
    a.save(tmp_path / "m.json")
    loaded = EpisodeManifest.load(tmp_path / "m.json")
    assert loaded.content_hash == a.content_hash and loaded.episodes == a.episodes
    # the hash is a pure function of the content: saving again gives the same bytes
    a.save(tmp_path / "m2.json")
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "m2.json").read_bytes()


def test_manifest_episodes_are_valid_and_balanced(toy):
    m = build_test_manifest(toy, fold=1, shot=5, episode_seed=0, n_episodes=31)
    counts = {c: 0 for c in toy.novel_classes(1)}
    for e in m.episodes:
        assert e.class_id in counts
        counts[e.class_id] += 1
        assert e.query_id not in e.support_ids
        assert len(set(e.support_ids)) == 5
        for image_id in (e.query_id, *e.support_ids):
            assert toy.entries("test")[image_id].class_pixels.get(e.class_id, 0) > 0
    assert max(counts.values()) - min(counts.values()) <= 1


def test_tampered_manifest_is_refused(toy, tmp_path):
    m = build_test_manifest(toy, fold=0, shot=1, episode_seed=0, n_episodes=5)
    m.save(tmp_path / "m.json")
    raw = json.loads((tmp_path / "m.json").read_text())
    raw["episodes"][0]["query_id"] = "test_999"
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="was modified"):
        EpisodeManifest.load(tmp_path / "m.json")
    with pytest.raises(ManifestError, match="is for dataset 'toy' fold 0, not 'toy' fold 1"):
        m.check_matches(toy, 1)


def test_too_few_images_names_the_class(toy):
    with pytest.raises(
        DataError, match=r"class 1 \(a\) has \d+ usable image\(s\) in split 'test', needs at least 20"
    ):
        build_test_manifest(toy, fold=0, shot=19, episode_seed=0, n_episodes=5)


def test_training_episodes_are_pure_functions_of_seed_and_index(toy):
    s1 = TrainEpisodeSampler(toy, fold=0, shot=2, train_seed=7)
    s2 = TrainEpisodeSampler(toy, fold=0, shot=2, train_seed=7)
    assert [s1.episode(i) for i in range(20)] == [s2.episode(i) for i in reversed(range(20))][::-1]
    assert all(s1.episode(i).class_id in toy.base_classes(0) for i in range(50))
    other = TrainEpisodeSampler(toy, fold=0, shot=2, train_seed=8)
    assert [s1.episode(i) for i in range(20)] != [other.episode(i) for i in range(20)]


def test_remove_novel_filter_drops_images_with_novel_pixels(toy):
    sampler = TrainEpisodeSampler(toy, fold=0, shot=1, train_seed=0, train_filter="remove_novel")
    novel = set(toy.novel_classes(0))
    for images in sampler.candidates.values():
        for image_id in images:
            assert not novel & set(toy.entries("train")[image_id].class_pixels)


@pytest.mark.parametrize("workers", [0, 2])
def test_episode_tensors_do_not_depend_on_workers(toy, workers):
    m = build_test_manifest(toy, fold=0, shot=1, episode_seed=0, n_episodes=8)
    reference = [ManifestEpisodes(m, toy, 32, "original")[i] for i in range(8)]
    loader = DataLoader(
        ManifestEpisodes(m, toy, 32, "original"),
        batch_size=3,
        num_workers=workers,
        collate_fn=collate_episodes,
    )
    got = [b for b in loader]
    flat_ids = torch.cat([b["episode_id"] for b in got]).tolist()
    assert flat_ids == list(range(8))
    query = torch.cat([b["query_img"] for b in got])
    assert torch.equal(query, torch.stack([r["query_img"] for r in reference]))
    # novel-class foreground only for the episode's class, training masks binary
    for r in reference:
        assert set(r["query_label"].unique().tolist()) <= {0, 1, 255}


def test_episodes_command_draws_every_shot_and_seed_then_their_index(toy_root, tmp_path, capsys):
    """`fsseg episodes --shots --episode-seeds` (the workflow's one job per fold) writes each manifest at
    the path a single call writes it to, with the same bytes, and then the index naming them."""
    from fsseg.cli import main
    from fsseg.config import load_config

    config = tmp_path / "config.yaml"
    config.write_text(
        f"dataset: {{name: toy, root: {toy_root}, image_size: 32}}\noutput_root: {tmp_path / 'all'}\n"
        "eval: {n_episodes: 8}\n"
    )
    assert main(["episodes", "-c", str(config), "--shots", "1", "2", "--episode-seeds", "0", "3"]) == 0
    cfg = load_config([config])
    index = json.loads(cfg.manifest_set_path.read_text())["manifests"]
    assert [(e["shot"], e["episode_seed"]) for e in index] == [(1, 0), (1, 3), (2, 0), (2, 3)]
    for entry in index:
        sets = [f"eval.shot={entry['shot']}", f"eval.episode_seed={entry['episode_seed']}"]
        one = tmp_path / f"one_{entry['shot']}_{entry['episode_seed']}.json"
        argv = ["episodes", "-c", str(config), *[a for s in sets for a in ("--set", s)], "--out", str(one)]
        assert main(argv) == 0
        path = load_config([config], sets).manifest_path
        assert path.name == entry["file"] and path.parent == cfg.manifest_set_path.parent
        assert path.read_bytes() == one.read_bytes()
        assert EpisodeManifest.load(path).content_hash == entry["sha256"]
    assert main(["episodes", "-c", str(config), "--shots", "1", "--out", str(tmp_path / "x.json")]) == 2
    assert "--out names one manifest" in capsys.readouterr().err
