#!/usr/bin/env bash
# The GPU checks (issue 14, item 5) as one prepared run, for a machine with a CUDA device: the `device`
# tool's lent machines, or any GPU box. CI never runs it (CI has no GPU); on a machine without a CUDA
# device it stops at once with exit status 2, before anything is measured.
#
#   ci/gpu-check.sh [OUT_DIR]        # default: $OUT where it is set (the device tool's folder), else a new
#                                    # folder under $TMPDIR; the folder must be empty or not exist
#
# It runs, from this source tree and without installing it:
#   1. `pytest -m gpu tests/test_gpu.py`: tiny training + evaluation on CUDA (fp32; bf16 + channels-last),
#      the CPU and CUDA evaluations of the same weights within the bf16 tolerance, bench rows on CUDA;
#   2. `fsseg bench` on CUDA of PFENet and DSMF-Net with the iSAID-5i paper backbone (ResNet-50, output
#      stride 8, random weights), 473 px and 257 px, 1 and 5 shots, fp32 / bf16 / channels-last, batch
#      1 episode;
#   3. with OFFICIAL_PFENET set (a folder holding a copy of the official PFENet's model/, with the two
#      edits listed in reports/anchor/official_side_by_side.md; never committed here): the official forward
#      next to ours on the GPU, reports/anchor/side_by_side.py --device cuda, 473 px 1-shot and 257 px 5-shot.
#
# Output, at most 8 files (what the device tool brings back): env.txt (GPU, driver, versions),
# pytest_gpu.log, bench.txt (the tables), bench_pfenet.json, bench_dsmfnet.json, and with OFFICIAL_PFENET
# side_by_side_473_1shot.json and side_by_side_257_5shot.json. The last lines printed are the bench tables
# and one status line per step; the exit status is 0 only when every step passed.
#
# PYTHON (default python3) must have torch with CUDA, torchvision, numpy, scipy, pandas, pyyaml, pillow,
# matplotlib and pytest; snakemake is not needed. The tree's packages are imported through a folder of
# links, one per import name of pyproject.toml's package-dir (methods/ imports as fsseg_methods), which
# comes first on PYTHONPATH; the check below refuses to go on when a name resolves outside this tree.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
DEST=${1:-${OUT:-}}
if [[ -z "$DEST" ]]; then
    DEST=$(mktemp -d "${TMPDIR:-/tmp}/fsseg-gpu-check.XXXXXX")
fi
if [[ -e "$DEST" && -n "$(ls -A "$DEST" 2>/dev/null)" ]]; then
    echo "gpu-check: error: output folder $DEST is not empty; give an empty or new folder" >&2
    exit 2
fi
mkdir -p "$DEST" || { echo "gpu-check: error: cannot create output folder $DEST" >&2; exit 2; }
export PYTHONUNBUFFERED=1

# The import folder: one link per import name, to this tree's folder (fsseg.source_tree.tree_packages
# reads them from pyproject.toml, as `fsseg bench --against` does; that module needs only the stdlib).
LINKS=$(mktemp -d "${TMPDIR:-/tmp}/fsseg-gpu-imports.XXXXXX")
trap 'rm -rf "$LINKS"' EXIT
"$PYTHON" -P - "$REPO" "$LINKS" <<'PY' || exit 2
import sys
from pathlib import Path
repo, links = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(repo))
from fsseg.source_tree import tree_packages
for name, folder in tree_packages(repo).items():
    (links / name).symlink_to(folder, target_is_directory=True)
PY
export PYTHONPATH="$LINKS${PYTHONPATH:+:$PYTHONPATH}"

# What this Python has, and whether it can run the checks at all.
"$PYTHON" -P - "$REPO" >"$DEST/env.txt" <<'PY' || exit 2
import importlib, platform, sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
missing = []
for name in ("torch", "torchvision", "numpy", "scipy", "pandas", "yaml", "PIL", "matplotlib", "pytest"):
    try:
        importlib.import_module(name)
    except ImportError as err:
        missing.append(f"{name} ({err})")
if missing:
    sys.exit(f"gpu-check: error: {sys.executable} lacks " + ", ".join(missing) + "; install them or set PYTHON")
for name in ("fsseg", "fsseg_methods", "fsseg_datasets"):
    where = Path(importlib.import_module(name).__file__).resolve()
    if repo not in where.parents:
        sys.exit(f"gpu-check: error: {name} is imported from {where}, not from this tree {repo}")
    print(f"{name}: {where.parent}")
import torch
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("gpu-check: error: no CUDA device is visible to torch on this machine "
             f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run this on a GPU machine")
for index in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(index)
    print(f"cuda:{index}: {props.name}, {props.total_memory / 2**30:.1f} GiB, capability "
          f"{props.major}.{props.minor}, bf16 {torch.cuda.is_bf16_supported()}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >>"$DEST/env.txt" 2>&1 || true
cat "$DEST/env.txt"

declare -A RESULT
# 1. the gpu-marked tests
"$PYTHON" -m pytest -m gpu tests/test_gpu.py -v -p no:cacheprovider 2>&1 | tee "$DEST/pytest_gpu.log"
RESULT[pytest]=${PIPESTATUS[0]}

# 2. bench figures on the GPU (the anchor lines need a CPU row, so none are printed for these)
: >"$DEST/bench.txt"
for method in pfenet dsmfnet; do
    "$PYTHON" -m fsseg.cli bench -c config/experiments/paper_isaid5i.yaml --set "method.name=$method" \
        --sizes 473 257 --shots 1 5 --device cuda --bf16 --channels-last --warmup 10 --repeats 50 \
        --out "$DEST/bench_$method.json" 2>&1 | tee -a "$DEST/bench.txt"
    RESULT[bench_$method]=${PIPESTATUS[0]}
done

# 3. the official PFENet next to ours on the GPU, when its copy is given
if [[ -n "${OFFICIAL_PFENET:-}" ]]; then
    for spec in "473 1 [60,30,15,8]" "257 5 [1.0,0.5,0.25,0.125]"; do
        read -r size shot bins <<<"$spec"
        "$PYTHON" reports/anchor/side_by_side.py --device cuda --official-root "$OFFICIAL_PFENET" \
            --size "$size" --shot "$shot" --bins "$bins" --rounds 3 \
            --tree pfenet=.:pfenet --tree dsmfnet=.:dsmfnet >"$DEST/side_by_side_${size}_${shot}shot.json"
        RESULT[side_by_side_${size}_${shot}shot]=$?
    done
fi

echo
grep -v '^fsseg' "$DEST/bench.txt" || true
failed=0
for step in "${!RESULT[@]}"; do
    echo "gpu-check: $step exit ${RESULT[$step]}"
    [[ ${RESULT[$step]} -eq 0 ]] || failed=1
done
echo "gpu-check: results in $DEST"
exit "$failed"
