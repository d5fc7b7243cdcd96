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

``--device cuda`` times both sides on the GPU instead (``ci/gpu-check.sh`` does, when given the
official copy): model and episode on the device, ``torch.cuda.synchronize`` before and after each
timed forward, 10 warm-ups and the median of 50 forwards unless ``--warmup``/``--repeats`` say otherwise,
and IEEE fp32 on both sides (TF32 off, as fsseg's fp32 is). The official code then needs none of the two
edits, but runs with them too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "config" / "experiments" / "paper_isaid5i.yaml"

# Run in a fresh process for the official side: build PFENet (ResNet-50, random weights) and time it.
_OFFICIAL = """
import contextlib, io, json, statistics, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from model.PFENet import PFENet
from fsseg.efficiency import synthetic_episode
from fsseg.numerics import use_ieee_fp32
size, shot, bins = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
device, warmup, repeats = torch.device(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
use_ieee_fp32(device)  # as fsseg bench's fp32 rows (cuDNN would take TF32 on CUDA by default)
with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints
    model = PFENet(layers=50, classes=2, zoom_factor=8, pretrained=False, shot=shot, ppm_scales=bins)
model = model.eval().to(device)
episode = synthetic_episode(size, shot, device=device)
args = (episode["query_img"], episode["support_imgs"], episode["support_masks"].float())
times = []
with torch.no_grad():
    for _ in range(warmup):
        model(*args)
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model(*args)
        sync()
        times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"median_ms": statistics.median(times), "ms": times}))
"""


@dataclass(frozen=True)
class Timing:
    """Where and how long each process times: ``warmup`` untimed forwards, then the median of ``repeats``."""

    device: str
    warmup: int
    repeats: int

    def argv(self) -> list[str]:
        return [self.device, str(self.warmup), str(self.repeats)]


# Per device when not given: the CPU figures of official_side_by_side.md used 1 + 3 (a forward takes
# seconds); a GPU forward takes milliseconds and its first calls pay for cuDNN's and cuBLAS's set-up.
DEFAULT_WARMUP_REPEATS = {"cpu": (1, 3), "cuda": (10, 50)}


def _official_ms(root: Path, size: int, shot: int, bins: list[float], timing: Timing) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _OFFICIAL, str(root), str(size), str(shot), json.dumps(bins), *timing.argv()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"official PFENet run failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["median_ms"])


def _ours_ms(tree, method: str, size: int, shot: int, timing: Timing) -> float:
    from fsseg.source_tree import run_tree_cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        argv = ["bench", "-c", str(CONFIG), "--set", f"method.name={method}", "--sizes", str(size)]
        argv += ["--shots", str(shot), "--batch-size", "1", "--device", timing.device]
        argv += ["--warmup", str(timing.warmup), "--repeats", str(timing.repeats)]
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
    parser.add_argument("--device", choices=sorted(DEFAULT_WARMUP_REPEATS), default="cpu")
    parser.add_argument("--warmup", type=int, help="untimed forwards per process (cpu 1, cuda 10)")
    parser.add_argument("--repeats", type=int, help="timed forwards per process (cpu 3, cuda 50)")
    args = parser.parse_args()
    warmup, repeats = DEFAULT_WARMUP_REPEATS[args.device]
    timing = Timing(
        args.device,
        warmup if args.warmup is None else args.warmup,
        repeats if args.repeats is None else args.repeats,
    )
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
                times[name].append(_official_ms(args.official_root, args.size, args.shot, bins, timing))
            else:
                times[name].append(_ours_ms(*trees[name], args.size, args.shot, timing))
        print(f"round {index}: " + "  ".join(f"{n} {times[n][-1]:.0f} ms" for n in names), file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        name: {
            "median_over_official_median": medians[name] / medians["official"],
            "per_round": [a / b for a, b in zip(times[name], times["official"], strict=True)],
        }
        for name in trees
    }
    document = {
        "size": args.size,
        "shot": args.shot,
        "official_bins": bins,
        "device": timing.device,
        "warmup": timing.warmup,
        "repeats": timing.repeats,
        "ms": times,
    }
    print(json.dumps({**document, "median_ms": medians, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
