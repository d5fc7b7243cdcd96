"""Time the official PFENet forward next to fsseg source trees, in fresh interleaved processes.

How ``reports/anchor/official_side_by_side.md`` was measured. The official code is not part of this
project and is never installed: give the folder that holds a copy of its ``model/`` package
(dvlab-research/PFENet), with the two edits the md file lists so that it imports without CUDA.

    python reports/anchor/side_by_side.py --official-root /scratch/pfenet --size 473 --shot 1 \\
        --rounds 3 --tree before=/scratch/tree_128904a:pfenet --tree now=.:pfenet

Every timed process runs on 1 thread (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``torch``), builds
its model with random weights, runs 1 warm-up and 3 timed forwards of one episode (fsseg's
``synthetic_episode``: seeded noise images, ellipse masks) and reports the median; fsseg trees are
timed with ``fsseg bench`` through :func:`fsseg.source_tree.run_tree_cli` (each process imports its
own tree). Rounds alternate the order. The output is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "config" / "experiments" / "paper_isaid5i.yaml"

# Run in a fresh process for the official side: build PFENet (ResNet-50, random weights) and time it.
_OFFICIAL = """
import contextlib, io, json, statistics, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from model.PFENet import PFENet
from fsseg.efficiency import synthetic_episode
size, shot, bins = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints
    model = PFENet(layers=50, classes=2, zoom_factor=8, pretrained=False, shot=shot, ppm_scales=bins).eval()
episode = synthetic_episode(size, shot)
args = (episode["query_img"], episode["support_imgs"], episode["support_masks"].float())
times = []
with torch.no_grad():
    model(*args)
    for _ in range(3):
        start = time.perf_counter()
        model(*args)
        times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"median_ms": statistics.median(times), "ms": times}))
"""


def _official_ms(root: Path, size: int, shot: int, bins: list[float]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _OFFICIAL, str(root), str(size), str(shot), json.dumps(bins)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"official PFENet run failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["median_ms"])


def _ours_ms(tree, method: str, size: int, shot: int) -> float:
    from fsseg.source_tree import run_tree_cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        argv = ["bench", "-c", str(CONFIG), "--set", f"method.name={method}", "--sizes", str(size)]
        argv += ["--shots", str(shot), "--batch-size", "1", "--warmup", "1", "--repeats", "3"]
        argv += ["--threads", "1", "--out", str(out)]
        done, _ = run_tree_cli(tree, argv, threads=1, seed=0, workdir=Path(tmp))
        if done.returncode != 0:
            raise SystemExit(f"fsseg bench in {tree.root} failed:\n{done.stderr}")
        return float(json.loads(out.read_text())["results"][0]["latency_ms_median"])


def main() -> None:
    from fsseg.source_tree import SourceTree, tree_packages

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-root", type=Path, required=True, help="folder with the official model/")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--shot", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--bins", default="[60, 30, 15, 8]", help="official ppm_scales as JSON (its configs: [60, 30, 15, 8])"
    )
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR:METHOD", help="fsseg tree")
    args = parser.parse_args()
    trees = {}
    for spec in args.tree:
        label, _, rest = spec.partition("=")
        root, _, method = rest.rpartition(":")
        path = Path(root).resolve()
        trees[label] = (SourceTree(label, path, tree_packages(path)), method)
    bins = json.loads(args.bins)
    names = ["official", *trees]
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            if name == "official":
                times[name].append(_official_ms(args.official_root, args.size, args.shot, bins))
            else:
                times[name].append(_ours_ms(*trees[name], args.size, args.shot))
        print(f"round {index}: " + "  ".join(f"{n} {times[n][-1]:.0f} ms" for n in names), file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        name: {
            "median_over_official_median": medians[name] / medians["official"],
            "per_round": [a / b for a, b in zip(times[name], times["official"], strict=True)],
        }
        for name in trees
    }
    document = {"size": args.size, "shot": args.shot, "official_bins": bins, "ms": times}
    print(json.dumps({**document, "median_ms": medians, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
