#!/usr/bin/env bash
# Do two versions of the code write the same bytes? Runs one tiny pipeline (prepare, train, evaluate with
# diagnostics, predict) with the code of a git revision and with the working tree, and compares every
# output by sha256. For refactorings that must not change results.
#
#   ci/same-outputs.sh [BASE_REV]        # default BASE_REV: HEAD; PYTHON (default: python) runs fsseg
#
# Outputs: records.csv, diagnostics.json and the `fsseg predict` .npz of two runs (PANet; PFENet, which
# adds its prior_off probe to the diagnostics), each evaluated at 1 and 2 shots, and both model.pt. summary.json is compared with its "timing" block removed (wall-clock seconds differ
# between any two runs). One thread, so that both versions run the same kernels. Exit status 0 when every
# file is identical, 1 otherwise. The work folder (default: a new one under $TMPDIR) is kept.
set -euo pipefail

BASE_REV=${1:-HEAD}
PYTHON=${PYTHON:-python}
REPO=$(git rev-parse --show-toplevel)
WORK=${SAME_OUTPUTS_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/fsseg-same-outputs.XXXXXX")}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mkdir -p "$WORK/base"
git -C "$REPO" archive "$BASE_REV" | tar -x -C "$WORK/base"

# A source tree is run without installing it. Its folders do not all carry their import names (methods/
# installs as fsseg_methods), so each tree gets an import folder: one link per import name to its folder,
# read from the tree's own pyproject.toml ([tool.setuptools] package-dir; a tree from before the rename
# has none, and its packages.find folders import under their own names). Each name must then resolve to
# that tree, not to an installed copy of the project.
import_folder() {  # import_folder TREE DEST: fill DEST with TREE's packages under their import names
    "$PYTHON" - "$1" "$2" <<'PY'
import fnmatch, importlib.util, sys, tomllib
from pathlib import Path
tree, dest = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
setuptools = tomllib.loads((tree / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
mapping = setuptools.get("package-dir") or {
    p.name: p.name
    for p in tree.iterdir()
    if (p / "__init__.py").is_file()
    and any(fnmatch.fnmatch(p.name, pattern) for pattern in setuptools["packages"]["find"]["include"])
}
dest.mkdir(parents=True)
for name, folder in mapping.items():
    (dest / name).symlink_to(tree / folder, target_is_directory=True)
sys.path.insert(0, str(dest))
for name in mapping:
    origin = Path(importlib.util.find_spec(name).origin).resolve()
    if not origin.is_relative_to(tree):
        sys.exit(f"same-outputs: {name} of {tree} imports from {origin}")
print(f"{tree}: {', '.join(f'{n} -> {f}/' for n, f in mapping.items())}")
PY
}

fsseg() {  # fsseg with the code of import folder $1
    local imports=$1
    shift
    (cd "$WORK" && PYTHONPATH="$imports" "$PYTHON" -m fsseg.cli "$@")
}

rm -rf "$WORK/base.import" "$WORK/tree.import"
import_folder "$WORK/base" "$WORK/base.import"
import_folder "$REPO" "$WORK/tree.import"

DATA=$WORK/data
if [[ ! -f $DATA/fsseg_dataset.json ]]; then
    fsseg "$WORK/base.import" prepare synthetic --root "$DATA" --seed 0 --image-size 32 \
        --n-train 150 --n-val 90 --n-test 90 --n-pretrain 30 --workers 1 --no-progress
fi

cat >"$WORK/tiny.yaml" <<EOF
dataset: {name: synthetic, root: $DATA, image_size: 32}
backbone: {name: resnet18, weights: none, max_stage: layer3}
train: {iterations: 4, batch_size: 2, checkpoint_every: 2, log_every: 1, device: cpu}
eval: {n_episodes: 10, batch_size: 2, device: cpu}
EOF

METHODS=(panet pfenet)

run_all() {  # run every command of the pipeline with import folder $1 (of source tree $3) into output root $2
    local imports=$1 out=$2 tree=$3 sets
    for method in "${METHODS[@]}"; do
        sets=(--set "output_root=$out" --set "method.name=$method")
        # A tree whose benchmark recipes live in a recipe file (train.recipe_file) reads it from the tree;
        # the file's location is not part of a run's identity, its recipe name is.
        if [[ -f $tree/config/recipes/synthetic.yaml ]]; then
            sets+=(--set "train.recipe_file=$tree/config/recipes/synthetic.yaml")
        fi
        fsseg "$imports" train -c "$WORK/tiny.yaml" "${sets[@]}" 2>>"$out.log"
        fsseg "$imports" evaluate -c "$WORK/tiny.yaml" "${sets[@]}" --shots 1 2 --diagnose-shots 1 \
            >>"$out.log" 2>&1
        fsseg "$imports" predict -c "$WORK/tiny.yaml" "${sets[@]}" --episodes 4 \
            --out "$out/predictions/$method.npz" >>"$out.log" 2>&1
    done
}

hashes() {  # sha256 of every compared output under $1, paths relative to it
    (
        cd "$1"
        find . -type f \( -name records.csv -o -name diagnostics.json -o -name '*.npz' -o -name model.pt \) \
            -not -path './manifests/*' | LC_ALL=C sort | xargs sha256sum
        for summary in $(find . -name summary.json | LC_ALL=C sort); do
            "$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); d.pop("timing");
print(json.dumps(d, sort_keys=True))' "$summary" | sha256sum | sed "s#-\$#$summary (without timing)#"
        done
    )
}

rm -rf "$WORK/out_base" "$WORK/out_tree" "$WORK"/out_*.log
run_all "$WORK/base.import" "$WORK/out_base" "$WORK/base"
run_all "$WORK/tree.import" "$WORK/out_tree" "$REPO"
hashes "$WORK/out_base" >"$WORK/base.sha256"
hashes "$WORK/out_tree" >"$WORK/tree.sha256"
echo "== $BASE_REV ($(git -C "$REPO" rev-parse --short "$BASE_REV"))"
cat "$WORK/base.sha256"
echo "== working tree ($REPO)"
cat "$WORK/tree.sha256"
if diff -u "$WORK/base.sha256" "$WORK/tree.sha256"; then
    echo "same-outputs: $(wc -l <"$WORK/base.sha256") files identical (work folder $WORK)"
else
    echo "same-outputs: outputs differ (work folder $WORK)" >&2
    exit 1
fi
