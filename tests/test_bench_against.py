"""`fsseg bench --against REV`: tree export, processes that import their own tree, ratios; the anchor."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from fsseg.anchor import DEFAULT_ANCHOR, AnchorRow, anchor_estimates, implied_ratio, load_anchor
from fsseg.bench_against import BenchAgainstError, compare_latencies, run_tree_bench
from fsseg.cli import main
from fsseg.errors import ConfigError
from fsseg.source_tree import SourceTree, SourceTreeError, current_repository, tree_packages


def _in_git_checkout() -> bool:
    try:
        current_repository()
    except ConfigError:
        return False
    return True


needs_git = pytest.mark.skipif(not _in_git_checkout(), reason="fsseg is not run from a git checkout")


# --- ratio arithmetic -----------------------------------------------------------------------------
def test_ratio_is_of_the_medians_and_the_spread_is_over_per_round_ratios():
    result = compare_latencies([10.0, 12.0, 30.0], [20.0, 10.0, 25.0])
    assert result["current_ms"] == 12.0 and result["reference_ms"] == 20.0
    assert result["ratio"] == pytest.approx(0.6)
    assert result["ratio_min"] == pytest.approx(0.5)  # round 1: 10 / 20
    assert result["ratio_max"] == pytest.approx(1.2)  # rounds 2 and 3: 1.2 and 1.2


def test_ratio_refuses_unpaired_or_non_positive_rounds():
    with pytest.raises(ValueError, match="same positive number of rounds"):
        compare_latencies([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        compare_latencies([0.0], [1.0])


# --- which packages a tree has ----------------------------------------------------------------------
def _package(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    return folder


def test_tree_packages_follow_find_include_and_renamed_package_dirs(tmp_path: Path):
    for name in ("fsseg", "methods", "datasets", "tests"):
        _package(tmp_path / name)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.packages.find]\ninclude = ["fsseg*", "methods*", "datasets*"]\n'
    )
    assert tree_packages(tmp_path) == {
        name: str(tmp_path.resolve() / name) for name in ("datasets", "fsseg", "methods")
    }
    # the rename another branch makes: import names fsseg_methods/fsseg_datasets, folders unchanged
    (tmp_path / "pyproject.toml").write_text(
        "[tool.setuptools]\n"
        'packages = ["fsseg", "fsseg_methods", "fsseg_methods.panet", "fsseg_datasets"]\n'
        '[tool.setuptools.package-dir]\nfsseg_methods = "methods"\nfsseg_datasets = "datasets"\n'
    )
    root = tmp_path.resolve()
    assert tree_packages(tmp_path) == {
        "fsseg": str(root / "fsseg"),
        "fsseg_datasets": str(root / "datasets"),
        "fsseg_methods": str(root / "methods"),
    }
    # package-dir alone (setup.py lists the packages): its names only, no `methods` that could shadow
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { fsseg = "fsseg", fsseg_methods = "methods", '
        'fsseg_datasets = "datasets" }\n'
    )
    assert tree_packages(tmp_path) == {
        "fsseg": str(root / "fsseg"),
        "fsseg_datasets": str(root / "datasets"),
        "fsseg_methods": str(root / "methods"),
    }


def test_a_tree_without_fsseg_is_refused(tmp_path: Path):
    _package(tmp_path / "other")
    with pytest.raises(SourceTreeError, match="has no fsseg package"):
        tree_packages(tmp_path)


# --- the process mechanism, on fake trees (no torch model: fast) ------------------------------------
def _fake_tree(root: Path, body: str) -> SourceTree:
    """A tree whose `fsseg bench` is `body` (it gets argv; must write --out) and whose method package is
    imported under the name `fsseg_methods` from the folder `methods/`."""
    _package(root / "methods")
    (root / "methods" / "__init__.py").write_text(f"TREE = {str(root)!r}\n")
    fsseg = _package(root / "fsseg")
    (fsseg / "cli.py").write_text(textwrap.dedent(body))
    (root / "pyproject.toml").write_text(
        '[tool.setuptools]\npackages = ["fsseg", "fsseg_methods"]\n'
        '[tool.setuptools.package-dir]\nfsseg_methods = "methods"\n'
    )
    return SourceTree(f"fake {root.name}", root.resolve(), tree_packages(root))


_WRITES_A_ROW = """
    import json, sys
    import fsseg_methods

    def main(argv):
        out = argv[argv.index("--out") + 1]
        threads = argv[argv.index("--threads") + 1]
        row = {"image_size": 8, "shot": 1, "latency_ms_median": 2.0, "tree": fsseg_methods.TREE,
               "threads": threads}
        with open(out, "w") as handle:
            json.dump({"results": [row]}, handle)
        return 0
"""


def test_a_process_imports_the_packages_of_its_own_tree_under_their_mapped_names(tmp_path: Path):
    tree_a = _fake_tree(tmp_path / "a", _WRITES_A_ROW)
    tree_b = _fake_tree(tmp_path / "b", _WRITES_A_ROW)
    rows = run_tree_bench(tree_a, ["-c", "x.yaml"], 1, 0, tmp_path / "work", [tree_b])
    assert rows[0]["tree"] == str(tree_a.root)  # fsseg_methods came from a/methods, not from b or the install
    assert rows[0]["imported_fsseg"] == str(tree_a.root / "fsseg" / "__init__.py")
    assert rows[0]["threads"] == "1"
    rows = run_tree_bench(tree_b, [], 1, 0, tmp_path / "work", [tree_a])
    assert rows[0]["tree"] == str(tree_b.root)


def test_a_process_that_imports_code_of_the_other_tree_is_an_error(tmp_path: Path):
    tree_a = _fake_tree(tmp_path / "a", _WRITES_A_ROW)
    leaky = _WRITES_A_ROW.replace(
        "import fsseg_methods",
        f"import sys; sys.path.insert(0, {str(tree_a.root)!r})\n    import methods as fsseg_methods",
    )
    tree_b = _fake_tree(tmp_path / "b", leaky)
    (tree_b.root / "methods").rename(tree_b.root / "renamed")  # b's own `methods` folder is gone
    tree_b = SourceTree(tree_b.label, tree_b.root, {"fsseg": str(tree_b.root / "fsseg")})
    with pytest.raises(SourceTreeError, match=r"fake b: the bench process imported methods from .*/a"):
        run_tree_bench(tree_b, [], 1, 0, tmp_path / "work", [tree_a])


def test_a_tree_whose_bench_fails_is_named_with_its_error_tail(tmp_path: Path):
    failing = """
        import sys

        def main(argv):
            print("fsseg: error: config key 'precision' is unknown", file=sys.stderr)
            return 2
    """
    tree = _fake_tree(tmp_path / "old", failing)
    with pytest.raises(BenchAgainstError) as raised:
        run_tree_bench(tree, [], 1, 0, tmp_path / "work", [])
    message = str(raised.value)
    assert message.startswith("fake old: `fsseg bench` failed (exit code 2)")
    assert "config key 'precision' is unknown" in message


# --- the command, end to end ----------------------------------------------------------------------
def _tiny_config(tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"output_root: {tmp_path / 'results'}\n"
        f"dataset: {{name: synthetic, root: {tmp_path / 'no-data'}, image_size: 32}}\n"
        "backbone: {name: resnet18, weights: none}\n"
        "method: {name: colour_floor}\n"
    )
    return config


@needs_git
def test_bench_against_head_times_both_trees_in_their_own_processes(tmp_path: Path, capsys):
    repository = current_repository()
    out = tmp_path / "against.json"
    argv = ["bench", "-c", str(_tiny_config(tmp_path)), "--warmup", "0", "--repeats", "1"]
    assert main([*argv, "--against", "HEAD", "--rounds", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "current/REV" in printed.splitlines()[0]
    document = json.loads(out.read_text())
    head = subprocess.run(
        ["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert document["reference"] == {"rev": "HEAD", "commit": head}
    assert document["threads"] == 1
    (result,) = document["results"]
    assert (result["method"], result["image_size"], result["shot"], result["mode"]) == (
        "colour_floor",
        32,
        1,
        "fp32",
    )
    assert result["ratio"] == pytest.approx(result["current_ms"] / result["reference_ms"])
    assert result["ratio_min"] == result["ratio_max"] == pytest.approx(result["ratio"])  # one round
    (current_row,) = result["current_rows"]
    (reference_row,) = result["reference_rows"]
    assert current_row["imported_fsseg"] == str(repository / "fsseg" / "__init__.py")
    exported = Path(reference_row["imported_fsseg"]).parents[1]
    assert exported != repository and not exported.exists()  # REV's temporary tree, removed afterwards
    assert current_row["num_threads"] == reference_row["num_threads"] == 1


@needs_git
def test_a_rev_that_names_no_commit_is_a_clear_error(tmp_path: Path, capsys):
    argv = ["bench", "-c", str(_tiny_config(tmp_path)), "--against", "no-such-rev-0000"]
    assert main(argv) == 2
    assert "--against 'no-such-rev-0000' names no commit of the repository" in capsys.readouterr().err


def test_rounds_without_against_is_refused(tmp_path: Path, capsys):
    assert main(["bench", "-c", str(_tiny_config(tmp_path)), "--rounds", "2"]) == 2
    assert "--rounds counts the interleaved rounds of --against REV" in capsys.readouterr().err


# --- the latency anchor ---------------------------------------------------------------------------
def _anchor(**changes) -> AnchorRow:
    values = dict(
        method="pfenet",
        variant="default",
        backbone="resnet50",
        image_size=473,
        shot=1,
        official_code="PFENet",
        official_ms=4331.0,
        ours_ms=4282.0,
        threads=1,
        batch_episodes=1,
        precision="fp32",
        cpu="Intel(R) Xeon(R) Processor",
    )
    return AnchorRow(**{**values, **changes})


def _row(**changes) -> dict:
    values = dict(
        method="pfenet",
        variant="default",
        backbone="resnet50",
        image_size=473,
        shot=1,
        amp_bf16=False,
        channels_last=False,
        device_type="cpu",
        num_threads=1,
        batch_size=1,
        cpu="Intel(R) Xeon(R) Processor",
        latency_ms_median=3464.8,
    )
    return {**values, **changes}


def test_implied_ratio_scales_the_anchor_ratio_by_our_speed_up():
    anchor = _anchor()
    assert implied_ratio(4282.0, anchor) == pytest.approx(4282.0 / 4331.0)
    assert implied_ratio(3464.8, anchor) == pytest.approx(0.8)  # 19 % faster than in the anchor run


def test_anchor_estimates_match_configuration_and_name_differing_conditions():
    anchors = [_anchor()]
    (line,) = anchor_estimates([_row()], anchors)
    assert line.startswith("# anchor estimate (not a measurement of the official code)")
    assert "~ 0.80" in line and "NOT COMPARABLE" not in line
    assert anchor_estimates([_row(shot=5), _row(amp_bf16=True), _row(device_type="cuda")], anchors) == []
    (line,) = anchor_estimates([_row(num_threads=2, cpu="AMD EPYC")], anchors)
    assert "NOT COMPARABLE: 2 threads (anchor 1), CPU 'AMD EPYC'" in line


def test_anchor_estimates_take_the_side_by_side_run_on_the_rows_cpu():
    anchors = [_anchor(), _anchor(cpu="AMD EPYC", official_ms=5317.0, ours_ms=4908.0)]
    (xeon,) = anchor_estimates([_row(latency_ms_median=3464.8)], anchors)
    assert "~ 0.80" in xeon and "NOT COMPARABLE" not in xeon
    (amd,) = anchor_estimates([_row(cpu="AMD EPYC", latency_ms_median=3539.0)], anchors)
    assert "~ 0.67" in amd and "5317 ms official" in amd and "NOT COMPARABLE" not in amd
    (other,) = anchor_estimates([_row(cpu="Some CPU")], anchors)
    assert "NOT COMPARABLE: CPU 'Some CPU' (anchor 'Intel(R) Xeon(R) Processor')" in other


def test_the_recorded_anchor_holds_issue_14s_table():
    anchors = load_anchor(DEFAULT_ANCHOR)
    rows = {row.key(): row for row in anchors if row.cpu == "Intel(R) Xeon(R) Processor"}
    assert len(rows) == 6
    pfenet = rows["pfenet", "default", "resnet50", 473, 1]
    assert (pfenet.official_ms, pfenet.ours_ms) == (4331.0, 4282.0)
    panet = rows["panet", "default", "vgg16", 417, 1]
    assert round(panet.ours_ms / panet.official_ms, 2) == 0.66
    assert rows["dsmfnet", "default", "resnet50", 473, 1].official_code == "PFENet"
    # the side-by-side run on the AMD EPYC (reports/anchor/official_side_by_side.md)
    amd = {row.key(): row for row in anchors if row.cpu == "AMD EPYC"}
    assert sorted(amd) == sorted(
        (method, "default", "resnet50", size, shot)
        for method in ("pfenet", "dsmfnet")
        for size, shot in ((473, 1), (257, 5))
    )
    assert (
        amd["pfenet", "default", "resnet50", 473, 1].official_ms,
        amd["pfenet", "default", "resnet50", 473, 1].ours_ms,
    ) == (5140.0, 4120.0)


def test_a_bad_anchor_row_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "anchor.csv"
    header = DEFAULT_ANCHOR.read_text().splitlines()[0]
    bad.write_text(header + "\npfenet,default,resnet50,473px,1,PFENet,4331,4282,0.99,,,fp32,1,1,cpu,\n")
    with pytest.raises(ConfigError, match=r"anchor\.csv, line 2: bad anchor row"):
        load_anchor(bad)


def test_bench_prints_the_anchor_estimate_for_a_matching_configuration(tmp_path: Path, capsys):
    anchor = tmp_path / "anchor.csv"
    header = DEFAULT_ANCHOR.read_text().splitlines()[0]
    anchor.write_text(
        header + "\ncolour_floor,default,resnet18,32,1,Floor,2.0,1.0,0.5,,,fp32,1,1,some CPU,\n"
    )
    argv = ["bench", "-c", str(_tiny_config(tmp_path)), "--warmup", "0", "--repeats", "1", "--threads", "1"]
    assert main([*argv, "--device", "cpu", "--anchor", str(anchor)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("# anchor estimate")]
    assert "colour_floor resnet18 32px 1-shot: ours/official Floor ~ " in line
    assert "x 0.500 (anchor ours/official, 2 ms official); NOT COMPARABLE: CPU" in line
