"""``fsseg bench --against REV``: time the current source tree against another git revision of fsseg.

How a comparison is run (the rule for every "faster" claim in this project):

* REV is resolved to a commit of the repository that holds the running ``fsseg`` and exported with
  ``git archive`` into a temporary folder (removed afterwards); the current tree is the working tree
  as it is, uncommitted edits included.
* Each (size, shot) of each round is measured by one fresh ``fsseg bench`` process per tree, started
  through :mod:`fsseg.tree_bootstrap` so that the process imports the code of that tree and not the
  installed one; the imported module files are checked afterwards, and a process that imported a
  module of the other tree is an error.
* Both trees get the same config files, ``--set`` overrides, sizes, shots, warm-up and repeats, the
  same thread count (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``torch.set_num_threads``; 1 unless
  ``--threads``), the same seeds (weights from ``train.train_seed``, inputs from the bench's seeded
  synthetic episode) and the same device.
* The processes are interleaved: round 1 runs the current tree first, round 2 REV first, and so on,
  so that a drift of the machine's speed falls on both.
* Per configuration: the ratio of the medians over rounds of each process's median latency
  (current / REV; below 1 means the current tree is faster) and the lowest and highest per-round
  ratio, which show how far a single pair of processes can be trusted.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fsseg.errors import ConfigError, FssegError
from fsseg.source_tree import (
    SourceTree,
    SourceTreeError,
    check_provenance,
    current_repository,
    describe_worktree,
    export_commit,
    resolve_commit,
    run_tree_cli,
    tree_packages,
)

_TAIL_LINES = 15


class BenchAgainstError(FssegError):
    """A tree's ``fsseg bench`` could not run or wrote no results."""


# --- one process ----------------------------------------------------------------------------------
def run_tree_bench(
    tree: SourceTree,
    bench_args: Sequence[str],
    threads: int,
    seed: int,
    workdir: Path,
    others: Sequence[SourceTree],
) -> list[dict[str, Any]]:
    """Run ``fsseg bench BENCH_ARGS`` of ``tree`` in a fresh process; its result rows, each with
    ``imported_fsseg``, the file the process imported ``fsseg`` from.

    ``bench_args`` must not hold ``--out`` or ``--threads``: they are added here.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="bench.", suffix=".json", dir=workdir)
    os.close(handle)
    out = Path(name)
    argv = ["bench", *bench_args, "--threads", str(threads), "--out", str(out)]
    done, modules = run_tree_cli(tree, argv, threads, seed, workdir)
    if done.returncode != 0 or modules is None:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise BenchAgainstError(
            f"{tree.label}: `fsseg bench` failed (exit code {done.returncode}) in {tree.root}; "
            f"last lines of its output:\n{tail}"
        )
    check_provenance(tree, modules, others)
    try:
        rows = list(json.loads(out.read_text())["results"])
    except (OSError, ValueError, KeyError) as err:
        raise BenchAgainstError(
            f"{tree.label}: `fsseg bench` wrote no readable results to {out}: {err}"
        ) from err
    return [{**row, "imported_fsseg": modules["fsseg"]} for row in rows]


# --- ratios ---------------------------------------------------------------------------------------
def compare_latencies(current_ms: Sequence[float], reference_ms: Sequence[float]) -> dict[str, float]:
    """Current / reference latency from per-round process medians (paired by round).

    ``ratio`` is the median of ``current_ms`` over the median of ``reference_ms``; ``ratio_min`` and
    ``ratio_max`` are the lowest and highest per-round ratio ``current_ms[r] / reference_ms[r]``.
    """
    if not current_ms or len(current_ms) != len(reference_ms):
        raise ValueError(
            f"need the same positive number of rounds, got {len(current_ms)} and {len(reference_ms)}"
        )
    if min(*current_ms, *reference_ms) <= 0:
        raise ValueError("latencies must be positive")
    per_round = [c / r for c, r in zip(current_ms, reference_ms, strict=True)]
    current, reference = statistics.median(current_ms), statistics.median(reference_ms)
    return {
        "current_ms": current,
        "reference_ms": reference,
        "ratio": current / reference,
        "ratio_min": min(per_round),
        "ratio_max": max(per_round),
    }


# --- the comparison -------------------------------------------------------------------------------
def _log_row(log: TextIO, round_index: int, rounds: int, label: str, row: dict[str, Any]) -> None:
    size, shot, mode = _row_key(row)
    print(
        f"fsseg bench --against: round {round_index + 1}/{rounds} {label} {size}px {shot}-shot {mode}: "
        f"{row['latency_ms_median']:.1f} ms",
        file=log,
        flush=True,
    )


def _row_key(row: dict[str, Any]) -> tuple[int, int, str]:
    from fsseg.efficiency import mode_label

    return int(row["image_size"]), int(row["shot"]), mode_label(row)


def bench_against(
    rev: str,
    bench_args: Sequence[str],
    sizes: Sequence[int],
    shots: Sequence[int],
    rounds: int = 3,
    threads: int = 1,
    seed: int = 0,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Time the current tree and ``rev`` over sizes × shots in ``rounds`` interleaved rounds.

    ``bench_args`` are the ``fsseg bench`` arguments both trees get (config, overrides, warm-up,
    repeats, device, precision flags), without ``--sizes``, ``--shots``, ``--threads`` and ``--out``.
    Returns a JSON-serialisable document (see :func:`format_against_table`).
    """
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    repository = current_repository()
    commit = resolve_commit(repository, rev)
    label = f"current tree ({describe_worktree(repository)})"
    current = SourceTree(label, repository, tree_packages(repository))
    with tempfile.TemporaryDirectory(prefix="fsseg-bench-against.") as scratch:
        scratch_dir = Path(scratch)
        exported = export_commit(repository, commit, scratch_dir / "tree")
        try:
            reference_packages = tree_packages(exported)
        except SourceTreeError as err:
            raise SourceTreeError(f"REV {rev} ({commit[:12]}): {err}") from err
        reference = SourceTree(f"REV {rev} ({commit[:12]})", exported, reference_packages)
        trees = {"current": current, "reference": reference}
        others = {"current": [reference], "reference": [current]}
        measured: dict[tuple[int, int, str], dict[str, list[dict[str, Any]]]] = {}
        for round_index in range(rounds):
            order = ("current", "reference") if round_index % 2 == 0 else ("reference", "current")
            for size in sizes:
                for shot in shots:
                    for which in order:
                        args = [*bench_args, "--sizes", str(size), "--shots", str(shot)]
                        rows = run_tree_bench(
                            trees[which], args, threads, seed, scratch_dir / "runs", others[which]
                        )
                        for row in rows:
                            entry = measured.setdefault(_row_key(row), {"current": [], "reference": []})
                            entry[which].append(row)
                            if log is not None:
                                _log_row(log, round_index, rounds, trees[which].label, row)
    results = []
    for (size, shot, mode), entry in measured.items():
        if len(entry["current"]) != rounds or len(entry["reference"]) != rounds:
            raise BenchAgainstError(
                f"{size}px {shot}-shot {mode}: measured {len(entry['current'])} times by the current tree "
                f"and {len(entry['reference'])} times by REV {rev}, expected {rounds} each"
            )
        current_ms = [r["latency_ms_median"] for r in entry["current"]]
        reference_ms = [r["latency_ms_median"] for r in entry["reference"]]
        first = entry["current"][0]
        results.append(
            {
                "method": first.get("method"),
                "variant": first.get("variant"),
                "backbone": first.get("backbone"),
                "image_size": size,
                "shot": shot,
                "mode": mode,
                "batch_size": first.get("batch_size"),
                "current_latency_ms": current_ms,
                "reference_latency_ms": reference_ms,
                **compare_latencies(current_ms, reference_ms),
                "current_gflops_per_episode": first["gflops_per_episode"],
                "reference_gflops_per_episode": entry["reference"][0]["gflops_per_episode"],
                "current_rows": entry["current"],
                "reference_rows": entry["reference"],
            }
        )
    first_row = results[0]["current_rows"][0] if results else {}
    return {
        "current": {"tree": str(repository), "commit": describe_worktree(repository)},
        "reference": {"rev": rev, "commit": commit},
        "rounds": rounds,
        "threads": threads,
        "order": "interleaved; odd rounds run the current tree first, even rounds REV first",
        "bench_args": list(bench_args),
        "device": first_row.get("device"),
        "cpu": first_row.get("cpu"),
        "results": results,
    }


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("method", "<"),
    ("backbone", "<"),
    ("size", ">"),
    ("shot", ">"),
    ("mode", "<"),
    ("current ms", ">"),
    ("REV ms", ">"),
    ("current/REV", ">"),
    ("round min", ">"),
    ("round max", ">"),
    ("GFLOPs current", ">"),
    ("GFLOPs REV", ">"),
)


def format_against_table(document: dict[str, Any]) -> str:
    """The comparison as a fixed-width table plus a footnote saying what was compared and how."""
    cells = [
        (
            str(r["method"]),
            str(r["backbone"]),
            str(r["image_size"]),
            str(r["shot"]),
            r["mode"],
            f"{r['current_ms']:.1f}",
            f"{r['reference_ms']:.1f}",
            f"{r['ratio']:.3f}",
            f"{r['ratio_min']:.3f}",
            f"{r['ratio_max']:.3f}",
            f"{r['current_gflops_per_episode']:.2f}",
            f"{r['reference_gflops_per_episode']:.2f}",
        )
        for r in document["results"]
    ]
    widths = [max([len(name), *(len(c[i]) for c in cells)]) for i, (name, _) in enumerate(_COLUMNS)]
    lines = ["  ".join(f"{name:{align}{w}}" for (name, align), w in zip(_COLUMNS, widths, strict=True))]
    for c in cells:
        padded = (f"{v:{align}{w}}" for v, (_, align), w in zip(c, _COLUMNS, widths, strict=True))
        lines.append("  ".join(padded))
    reference = document["reference"]
    lines.append(
        f"# current tree {document['current']['commit']} vs REV {reference['rev']} "
        f"({reference['commit'][:12]}); ms = median over {document['rounds']} rounds of each process's "
        f"median latency; current/REV < 1: the current tree is faster; round min/max: lowest/highest "
        f"per-round ratio; one fresh process per tree, size, shot and round, interleaved; "
        f"{document['threads']} thread(s); device {document['device']} [{document['cpu']}]"
    )
    return "\n".join(lines)
