"""Bad input and faults, as a demanding user meets them (issue 12): one table of cases.

Each case prepares a fault on a tiny toy dataset (or fake evaluation folders), runs the real command
line in-process (``fsseg.cli.main``) and checks the exit code, a fragment of the one-line message,
that no traceback was printed, and, where it matters, what is (not) left on disk. The kill cases
that need real processes are separate tests at the end.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fsseg.cli import main
from fsseg.config import load_config
from fsseg.data.index import with_checksums
from fsseg.locks import folder_lock, lock_path
from tests.test_stats import fake_records, write_run

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Env:
    """One test's private world: a copy of the toy dataset, a results folder and a config file."""

    tmp: Path
    data: Path
    results: Path
    config: Path
    monkeypatch: pytest.MonkeyPatch
    held: contextlib.ExitStack

    def args(self, command: str, *sets: str) -> list[str]:
        return [command, "-c", str(self.config), *[a for s in sets for a in ("--set", s)]]

    def cfg(self, *sets: str):
        return load_config([self.config], list(sets))

    def temporaries(self) -> list[Path]:
        return sorted(p for p in self.tmp.rglob(".*.tmp"))


CONFIG = """\
dataset: {{name: toy, root: {data}, image_size: 32}}
output_root: {results}
method: {{name: panet}}
train: {{iterations: 2, batch_size: 2, checkpoint_every: 1, log_every: 1}}
eval: {{n_episodes: 8, batch_size: 4}}
"""


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory) -> Path:
    """Results folder holding one finished 2-iteration PANet run of the faults config."""
    tmp = tmp_path_factory.mktemp("trained")
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(data=toy_root, results=tmp / "results"))
    assert main(["train", "-c", str(config)]) == 0
    return tmp / "results"


@pytest.fixture
def env(toy_root, tmp_path, monkeypatch) -> Iterator[Env]:
    data = tmp_path / "data"
    shutil.copytree(toy_root, data)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(data=data, results=tmp_path / "results"))
    with contextlib.ExitStack() as held:
        yield Env(tmp_path, data, tmp_path / "results", config, monkeypatch, held)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env, Path], list[str]]  # (env, trained results) -> argv
    code: int
    message: str
    check: Callable[[Env], None] | None = None


# ----------------------------------------------------------------------------------------------------------
# Helpers of the setups


def _use_trained(env: Env, trained: Path) -> None:
    shutil.copytree(trained, env.results)


def _first_entry(env: Env, split: str = "test") -> dict:
    return json.loads((env.data / "index" / f"{split}.json").read_text())["images"][0]


def _rewrite_index_row(env: Env, split: str, row_id: str) -> None:
    """Recompute one index row's checksums, as if the dataset had been prepared with the file as it is."""
    path = env.data / "index" / f"{split}.json"
    index = json.loads(path.read_text())
    index["images"] = [
        with_checksums(env.data, {k: v for k, v in r.items() if not k.endswith("_sha256")})
        if r["id"] == row_id
        else r
        for r in index["images"]
    ]
    path.write_text(json.dumps(index))


def _fail_writes_under(env: Env, err: int) -> None:
    """Make the rename that ends every atomic write under env.tmp fail with ``err`` (full disk, read-only)."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(env.tmp)):
            raise OSError(err, os.strerror(err))
        return real_replace(src, dst, *args, **kwargs)

    env.monkeypatch.setattr("fsseg.atomic.os.replace", replace)


def _records(env: Env) -> list[Path]:
    return sorted(env.results.rglob("records.csv"))


def _cut_records(root: Path, keep: int) -> None:
    for path in root.rglob("records.csv"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: 1 + keep]))


def _two_runs(env: Env, cut_a: int | None = None, cut_b: int | None = None) -> list[str]:
    run_a = write_run(env.tmp / "a", fake_records("dsmfnet", 0.6))
    run_b = write_run(env.tmp / "b", fake_records("panet", 0.5))
    if cut_a is not None:
        _cut_records(run_a, cut_a)
    if cut_b is not None:
        _cut_records(run_b, cut_b)
    return ["compare", str(run_a), str(run_b), "--bootstrap", "0"]


# ----------------------------------------------------------------------------------------------------------
# Setups: each returns the command line to run


def bad_yaml(env, trained):
    env.config.write_text(env.config.read_text() + "fold: [0\n")
    return env.args("train")


def unknown_key(env, trained):
    return env.args("train", "train.lrr=0.1")


def duplicate_key(env, trained):  # item 4
    env.config.write_text(env.config.read_text().replace("method:", "fold: 0\nfold: 1\nmethod:"))
    return env.args("train")


def missing_image(env, trained):
    (env.data / _first_entry(env)["image"]).unlink()
    return [*env.args("evaluate"), "--untrained"]


def corrupt_image(env, trained):
    entry = _first_entry(env)
    (env.data / entry["image"]).write_bytes(b"not a png")
    _rewrite_index_row(env, "test", entry["id"])  # a release that was already broken when prepared
    return [*env.args("evaluate"), "--untrained"]


def wrong_size_mask(env, trained):
    from tests.toy_dataset import _png

    entry = _first_entry(env)
    (env.data / entry["mask"]).write_bytes(_png(torch.zeros(8, 8, dtype=torch.uint8).numpy()))
    _rewrite_index_row(env, "test", entry["id"])
    return [*env.args("evaluate"), "--untrained"]


def changed_mask(env, trained):  # item 5
    from tests.toy_dataset import _png

    entry = _first_entry(env)
    mask = torch.zeros(32, 32, dtype=torch.uint8).numpy()  # same size, other labels: the index is stale
    (env.data / entry["mask"]).write_bytes(_png(mask))
    return [*env.args("evaluate"), "--untrained"]


def changed_mask_in_training(env, trained):  # item 5, read by train
    from tests.toy_dataset import _png

    for row in json.loads((env.data / "index" / "train.json").read_text())["images"]:
        (env.data / row["mask"]).write_bytes(_png(torch.zeros(32, 32, dtype=torch.uint8).numpy()))
    return env.args("train")


def truncated_index(env, trained):
    path = env.data / "index" / "test.json"
    path.write_text(path.read_text()[:200])
    return [*env.args("evaluate"), "--untrained"]


def old_index_format(env, trained):
    path = env.data / "fsseg_dataset.json"
    path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 1'))
    return [*env.args("evaluate"), "--untrained"]


def empty_release(env, trained):
    (env.tmp / "release").mkdir()
    return ["prepare", "isaid5i", "--root", str(env.tmp / "release"), "--workers", "1"]


def release_left_untouched(env):
    assert list((env.tmp / "release").iterdir()) == []  # no index, no lock file, no staging folder


def tampered_manifest(env, trained):
    assert main([*env.args("episodes")]) == 0
    path = env.cfg().manifest_path
    manifest = json.loads(path.read_text())
    manifest["episodes"][0]["query_id"] = manifest["episodes"][1]["query_id"]
    path.write_text(json.dumps(manifest))
    return [*env.args("evaluate"), "--untrained"]


def evaluate_untrained_run(env, trained):
    return env.args("evaluate")


def nan_loss(env, trained):
    return env.args("train", "train.lr=1e30", "train.optimizer=sgd", "train.iterations=20")


def nan_weights(env, trained):  # item 1: the loss stays finite, the weights do not
    return env.args("train", "train.lr=1e10", "train.iterations=2")


def no_model_written(env):
    assert not list(env.results.rglob("model.pt"))


def nan_model_evaluated(env, trained):  # item 1: refuse to evaluate non-finite weights
    _use_trained(env, trained)
    (path,) = env.results.rglob("model.pt")
    weights = torch.load(path, weights_only=True)
    next(v for v in weights.values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(weights, path)
    return env.args("evaluate")


def no_records_written(env):
    assert _records(env) == []


def evaluate_other_config(env, trained):  # item 2
    _use_trained(env, trained)
    return env.args("evaluate", "train.lr=0.5", "train.iterations=8")


def compare_cut_both(env, trained):  # item 3: both sides cut to the same episodes
    return _two_runs(env, cut_a=5, cut_b=5)


def compare_cut_one(env, trained):  # item 7: was AttributeError '_merge'
    return _two_runs(env, cut_b=5)


def compare_without_summary(env, trained):
    argv = _two_runs(env)
    next((env.tmp / "b").rglob("summary.json")).unlink()
    return argv


def compare_other_manifests(env, trained):
    run_a = write_run(env.tmp / "a", fake_records("dsmfnet", 0.6))
    run_b = write_run(env.tmp / "b", fake_records("panet", 0.5, n_episodes=10))
    return ["compare", str(run_a), str(run_b), "--bootstrap", "0"]


def truncated_checkpoint(env, trained):  # item 6
    _use_trained(env, trained)
    (run_dir,) = {p.parent for p in env.results.rglob("model.pt")}
    for name in ("model.pt", "train_summary.json"):  # as if killed before the end
        (run_dir / name).unlink()
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    return env.args("train")


def garbage_model_train(env, trained):  # item 6: must not say "already trained"
    _use_trained(env, trained)
    (path,) = env.results.rglob("model.pt")
    path.write_bytes(b"garbage")
    return env.args("train")


def garbage_model_evaluate(env, trained):
    garbage_model_train(env, trained)
    return env.args("evaluate")


def garbage_model_restart(env, trained):  # item 6: the way out
    garbage_model_train(env, trained)
    return [*env.args("train"), "--restart"]


def model_is_readable(env):
    (path,) = env.results.rglob("model.pt")
    assert all(torch.isfinite(v).all() for v in torch.load(path, weights_only=True).values())


def disk_full_train(env, trained):  # item 8
    _fail_writes_under(env, errno.ENOSPC)
    return env.args("train")


def read_only_evaluate(env, trained):  # item 8
    _fail_writes_under(env, errno.EROFS)
    return [*env.args("evaluate"), "--untrained"]


def disk_full_prepare(env, trained):  # item 8
    _fail_writes_under(env, errno.ENOSPC)
    return ["prepare", "synthetic", "--root", str(env.tmp / "synthetic"), "--workers", "1", "--no-progress"]


def disk_full_bench(env, trained):  # item 8
    _fail_writes_under(env, errno.ENOSPC)
    out = env.tmp / "bench.json"
    return [*env.args("bench"), "--warmup", "0", "--repeats", "1", "--out", str(out)]


def nothing_half_written(env):
    assert env.temporaries() == [], env.temporaries()
    assert not (env.tmp / "bench.json").exists()
    assert not (env.tmp / "synthetic" / "fsseg_dataset.json").exists()
    assert not list(env.results.rglob("summary.json")) and not list(env.results.rglob("config.yaml"))


def read_only_lock_folder(env, trained):  # item 8: even the lock file cannot be made
    real_open = os.open

    def failing_open(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    env.monkeypatch.setattr("fsseg.locks.os.open", failing_open)
    return env.args("train")


def _hold(env: Env, folder: Path) -> None:
    """Hold ``folder``'s lock until the test ends (flock conflicts between open files in one process too)."""
    env.held.enter_context(folder_lock(folder, "fsseg test-holder"))


def locked_run(env, trained):  # item 9
    _hold(env, env.cfg().run_dir)
    return env.args("train")


def locked_eval(env, trained):  # item 9
    _hold(env, env.cfg().eval_dir.with_name(env.cfg().eval_dir.name + "_untrained"))
    return [*env.args("evaluate"), "--untrained"]


def locked_prepare(env, trained):  # item 9
    _hold(env, env.tmp / "synthetic")
    return ["prepare", "synthetic", "--root", str(env.tmp / "synthetic"), "--workers", "1"]


def stale_lock(env, trained):  # item 9: the lock file of a dead process is taken over
    path = lock_path(env.cfg().run_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": 999999, "host": "gone", "command": "fsseg train", "since": "then"}))
    return env.args("train")


def leftovers_of_failed_first_checkpoint(env, trained):  # item 10
    run_dir = env.cfg().run_dir
    run_dir.mkdir(parents=True)
    (run_dir / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"\0" * 1000)  # killed while writing
    (run_dir / "train_log.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n')  # but no checkpoint
    return env.args("train", "train.iterations=3")


def log_holds_each_iteration_once(env):
    (log,) = env.results.rglob("train_log.jsonl")
    assert [json.loads(r)["iteration"] for r in log.read_text().splitlines()] == [1, 2, 3]
    assert env.temporaries() == []


CASES = [
    # Config
    Case("malformed-yaml", bad_yaml, 2, "is not valid YAML"),
    Case("unknown-config-key", unknown_key, 2, "unknown key(s) 'lrr'"),
    Case("duplicate-config-key", duplicate_key, 2, "duplicate key 'fold' on line 4 (first on line 3)"),
    # Data
    Case("missing-image", missing_image, 2, "image file is missing"),
    Case("corrupt-image", corrupt_image, 2, "image file is corrupt or unreadable"),
    Case("wrong-size-mask", wrong_size_mask, 2, "is 8x8 but its image is 32x32"),
    Case("mask-changed-after-prepare", changed_mask, 2, "changed after `fsseg prepare`"),
    Case("mask-changed-read-by-train", changed_mask_in_training, 2, "changed after `fsseg prepare`"),
    Case("truncated-index", truncated_index, 2, "index file"),
    Case("index-without-checksums", old_index_format, 2, "run `fsseg prepare toy ...` again"),
    Case("empty-release", empty_release, 2, "nothing was written", release_left_untouched),
    Case("tampered-manifest", tampered_manifest, 2, "was modified"),
    # Training and weights
    Case("evaluate-before-training", evaluate_untrained_run, 2, "no trained weights"),
    Case("diverging-loss", nan_loss, 2, "loss is not finite", no_model_written),
    Case("nan-weights-finite-loss", nan_weights, 2, "diverged (iteration", no_model_written),
    Case("evaluate-nan-weights", nan_model_evaluated, 2, "non-finite weights", no_records_written),
    Case(
        "evaluate-other-train-config",
        evaluate_other_config,
        2,
        # the run identity holds the resolved recipe's values too (fsseg/engine/build.py training_identity)
        "differing keys: recipe.iterations, recipe.lr, train.iterations, train.lr",
    ),
    Case("truncated-checkpoint", truncated_checkpoint, 2, "checkpoint.pt is unreadable"),
    Case("garbage-model-train", garbage_model_train, 2, "model.pt is unreadable"),
    Case("garbage-model-evaluate", garbage_model_evaluate, 2, "--restart"),
    Case("garbage-model-restart", garbage_model_restart, 0, "--restart: deleting", model_is_readable),
    # Statistics
    Case("compare-both-cut", compare_cut_both, 2, "holds 5 episode rows"),
    Case("compare-one-cut", compare_cut_one, 2, "holds 5 episode rows"),
    Case("compare-no-summary", compare_without_summary, 2, "no summary.json next to it"),
    Case("compare-other-manifests", compare_other_manifests, 2, "different episode manifests"),
    # Output folder
    Case(
        "disk-full-train",
        disk_full_train,
        2,
        "No space left on device; the disk is full",
        nothing_half_written,
    ),
    Case("read-only-evaluate", read_only_evaluate, 2, "Read-only file system", nothing_half_written),
    Case("disk-full-prepare", disk_full_prepare, 2, "the disk is full", nothing_half_written),
    Case("disk-full-bench", disk_full_bench, 2, "bench.json: No space left", nothing_half_written),
    Case("read-only-lock", read_only_lock_folder, 2, "cannot create the lock file"),
    # Concurrency and leftovers
    Case("second-train-same-run", locked_run, 2, f"is in use by pid {os.getpid()}"),
    Case("second-evaluate-same-folder", locked_eval, 2, "running `fsseg test-holder` since"),
    Case("second-prepare-same-root", locked_prepare, 2, "is in use by pid"),
    Case("stale-lock-taken-over", stale_lock, 0, "finished"),
    Case(
        "failed-first-checkpoint",
        leftovers_of_failed_first_checkpoint,
        0,
        "removed 1 temporary file",
        log_holds_each_iteration_once,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fault(case: Case, env: Env, trained: Path, capsys):
    argv = case.setup(env, trained)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.message in err, err
    assert "Traceback" not in err
    if code != 0:
        assert err.count("fsseg: error:") == 1, err
    if case.check is not None:
        case.check(env)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------------------------------------
# Kills: real processes


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
def test_killed_prepare_leaves_no_worker_running(tmp_path):  # item 11
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "fsseg.cli", "prepare", "synthetic", "--root", str(tmp_path / "s")]
    command += ["--workers", "2", "--n-train", "3000", "--image-size", "32", "--no-progress"]
    parent = subprocess.Popen(command, env=env, cwd=REPO)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = _children(parent.pid)
        assert len(workers) == 2, "the prepare did not start its two workers"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers outlived their killed parent"
    finally:
        # A failing run must not leave its own orphans behind either (only the pids started here).
        for pid in [parent.pid, *workers, *_children(parent.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
