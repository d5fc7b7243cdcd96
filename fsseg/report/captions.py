"""Caption text: the protocol every number was measured under, stated in words from ``protocol.json``.

A reader of a table must be able to tell, from its caption alone, how many episodes and seeds stand
behind each number, at which image size and label resolution it was scored, which training images were
allowed and how the checkpoint was chosen. Captions are plain Unicode text; the table writers escape
them for Markdown and LaTeX.

FB-IoU captions never contain the string "mIoU" (a trap of older code bases: FB-IoU printed as mIoU), so
nothing shared by every caption may contain it either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fsseg.report.spec import MIN_UNITS_TO_MARK, ReportSpec

METRIC_TEXT = {
    "miou": "class-wise mIoU (per class: IoU of the summed intersections and unions over its episodes; "
    "mean over the fold's novel classes)",
    "fbiou": "FB-IoU (foreground IoU and background IoU over all episodes, averaged)",
}
METRIC_SHORT = {"miou": "mIoU", "fbiou": "FB-IoU"}


def join(values: Iterable[Any]) -> str:
    """``0, 1, 2``."""
    return ", ".join(str(v) for v in values)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _selection_text(selection: dict[str, Any]) -> str:
    if selection.get("selection") == "best_val":
        return (
            f"checkpoint with the best score on {selection['val_episodes']} validation episodes "
            f"(val split, episode seed {selection['val_episode_seed']}, every {selection['val_every']} "
            "iterations), never chosen on test episodes"
        )
    return "last checkpoint (no selection)"


def _filter_text(train_filter: str) -> str:
    if train_filter == "remove_novel":
        return "training images containing any novel class dropped (remove_novel)"
    return "training images with novel classes kept, their pixels as background (train filter: none)"


def _min_object_text(min_object_px: int) -> str:
    if min_object_px <= 0:
        return "no minimum object size"
    return f"an image serves a class only where the class covers at least {min_object_px} px"


PROTOCOL_NAMES = {
    "H": "SDM/SCCNet/MGCL: novel-class training pixels kept as background, every test pair once",
    "B": "BAM/DMNet/R2Net: training images with novel classes removed, 1000 episodes per seed",
}


def _episodes_text(protocol: dict[str, Any]) -> str:
    sampler = protocol.get("sampler", "balanced")
    if sampler == "all_pairs":
        return "every (image, novel class) pair once per fold and episode seed (random supports)"
    how = {
        "balanced": "classes in balanced rounds",
        "pfenet": "PFENet's sampler: the query list walked in order, class drawn among those in the query",
    }[sampler]
    return f"{protocol['n_episodes']} test episodes per fold and episode seed ({how})"


def protocol_text(protocol: dict[str, Any]) -> str:
    """One paragraph naming every protocol fact of ``protocol.json``."""
    options = protocol.get("dataset_options") or {}
    options_text = f" ({join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""
    size = protocol["image_size"]
    resolution = (
        "labels scored at their original resolution"
        if protocol["label_resolution"] == "original"
        else f"labels resized to the {size}×{size} input"
    )
    weights = join(protocol.get("backbone_weights", []))
    own_sizes = {k: v for k, v in (protocol.get("image_sizes") or {}).items() if v != size}
    size_text = f"input {size}×{size} px" + (
        " (" + join(f"{k} {v}×{v} px" for k, v in sorted(own_sizes.items())) + ")" if own_sizes else ""
    )
    name = protocol.get("protocol")
    named = f"protocol {name} ({PROTOCOL_NAMES[name]}); " if name in PROTOCOL_NAMES else ""
    return (
        f"Protocol: {named}dataset {protocol['dataset']}{options_text}, folds {join(protocol['folds'])}; "
        f"{_episodes_text(protocol)} from the "
        f"{protocol['eval_split']} split, the same saved episodes for every method; "
        f"episode seeds {join(protocol['episode_seeds'])}; train seeds {join(protocol['train_seeds'])}; "
        f"{size_text}, {resolution}; {_filter_text(protocol['train_filter'])}; "
        f"{_min_object_text(protocol['min_object_px'])}; "
        f"{_selection_text(protocol['checkpoint_selection'])}; "
        f"backbone {join(protocol.get('backbones', []))} (weights: {weights})."
    )


def shots_text(shots: Sequence[int]) -> str:
    """``1-shot``, ``1- and 5-shot``, ``1-, 2- and 5-shot``."""
    words = [f"{s}-" for s in shots]
    joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return joined + "shot"


def _ending(spec: ReportSpec, protocol: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """What the item shows, then the protocol, then the spec's extra sentence."""
    parts = [*notes, protocol_text(protocol)]
    if spec.caption_extra:
        parts.append(spec.caption_extra.strip())
    return " ".join(p if p.endswith(".") else p + "." for p in parts if p)


def missing_note(missing: Sequence[str]) -> str:
    return f"Not evaluated, hence not shown: {join(missing)}" if missing else ""


def training_note(train_shots: dict[int, list[int]]) -> str:
    """Which train shot each test shot's models used, e.g. ``1-shot tests: models trained 1-shot``."""
    parts = [
        f"{shot}-shot tests use models trained on {join(sorted(set(ts)))}-shot episodes"
        for shot, ts in sorted(train_shots.items())
        if ts
    ]
    return "; ".join(parts)


def main_caption(
    spec: ReportSpec,
    protocol: dict[str, Any],
    metric: str,
    n_train_seeds: int,
    n_episode_seeds: int,
    train_shots: dict[int, list[int]],
    missing: Sequence[str],
    unused_support: dict[str, float] | None = None,
    fewer_seeds: dict[str, int] | None = None,
) -> str:
    short = METRIC_SHORT[metric]
    spread = f"mean ± sd over {n_train_seeds} train seeds" if n_train_seeds > 1 else "one train seed (no sd)"
    if fewer_seeds:
        fewer = ", ".join(f"{label} {_plural(n, 'train seed')}" for label, n in fewer_seeds.items())
        spread += f" (fewer for {fewer}: no sd with one)"
    return _ending(
        spec,
        protocol,
        [
            f"{spec.title}: {METRIC_TEXT[metric]}, in %, per fold and averaged over folds, "
            f"for {shots_text(spec.shots)} test episodes",
            f"Each cell: {spread}; a train seed's score on a fold is its {short} averaged over "
            f"{_plural(n_episode_seeds, 'episode seed')}, and the Mean column first averages each train "
            "seed over the folds. Bold: the best mean in each column",
            unused_support_note(spec, unused_support or {}),
            training_note(train_shots),
            missing_note(missing),
        ],
    )


def unused_support_note(spec: ReportSpec, unused_support: dict[str, float]) -> str:
    """The main tables' ‡: which methods' scores do not depend on their support (empty when none)."""
    if not unused_support:
        return ""
    which = ", ".join(f"{label} ({drop:+.1f})" for label, drop in unused_support.items())
    return (
        f"‡: the score falls by less than {spec.min_swap_drop:g} points when every test episode's support "
        f"is taken from another class (diagnostics table; drop in points: {which}), so it is reachable "
        "without using the support: not a few-shot result, and never bold"
    )


def ablation_caption(
    spec: ReportSpec, protocol: dict[str, Any], n_comparisons: int, n_boot: int, missing: Sequence[str]
) -> str:
    if not spec.ablations:
        return _ending(
            spec,
            protocol,
            [f"{spec.title}: ablations of {spec.flagship.display}. The report spec declares no ablations; "
             f"the full model's score ({METRIC_TEXT['miou']}, in %, mean over folds, mean ± sd over train "
             "seeds) is shown alone"],
        )  # fmt: skip
    return _ending(
        spec,
        protocol,
        [
            f"{spec.title}: ablations of {spec.flagship.display}. Score: {METRIC_TEXT['miou']}, in %, "
            "mean over folds, mean ± sd over train seeds. Δ = variant − full model, in points (negative: "
            "the variant scores lower). p: paired t-test over fold × train-seed units, Holm-adjusted over "
            f"all {n_comparisons} ablation comparisons (one family); † marks Holm p < {spec.alpha:g} over at "
            f"least {MIN_UNITS_TO_MARK} units. "
            "Change: the variant's parameters that differ from the full model",
            missing_note(missing),
        ],
    )


def significance_caption(
    spec: ReportSpec, protocol: dict[str, Any], families: Sequence[str], missing: Sequence[str]
) -> str:
    if not families:
        return _ending(
            spec,
            protocol,
            [f"{spec.title}: paired comparisons. The report spec declares no baselines and no ablations, so "
             "there is nothing to compare", missing_note(missing)],
        )  # fmt: skip
    boot = (
        f"paired bootstrap over the shared episodes ({spec.bootstrap.iterations} resamples per manifest, "
        f"seed {spec.bootstrap.seed}, the same resamples for every comparison), percentile 95% CI"
        if spec.bootstrap.iterations
        else "bootstrap not run"
    )
    return _ending(
        spec,
        protocol,
        [
            f"{spec.title}: paired comparisons of {METRIC_TEXT['miou']}. Δ = A − B in points (positive: A "
            "scores higher), averaged over units (fold × train seed; each unit's score averaged over its "
            "episode seeds). 95% CI: t distribution over units; p: paired t-test (scipy ttest_rel); "
            f"d_z = mean Δ / sd of Δ; {boot}. Holm adjustment within each family "
            f"({'; '.join(families)}); "
            f"† marks Holm-adjusted t-test p < {spec.alpha:g} over at least {MIN_UNITS_TO_MARK} units "
            "(with 2 units the t-test has one degree of freedom, so its p and d_z are shown but not "
            "marked). The CSV adds the Wilcoxon signed-rank test "
            "(run only with at least 6 units) and Holm-adjusted bootstrap and Wilcoxon p",
            missing_note(missing),
        ],
    )


def efficiency_caption(spec: ReportSpec, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f"{spec.title}: efficiency. No `fsseg bench` measurements were given, so the table is empty."
    devices = sorted({f"{r['device']} [{r.get('cpu', '')}]" for r in rows})
    kinds = sorted({str(r["peak_memory_kind"]) for r in rows})
    first = rows[0]
    parts = [
        f"{spec.title}: efficiency per method, measured by `fsseg bench` the same way for every method on "
        f"synthetic episodes (randomly initialised weights: cost does not depend on weight values), "
        f"batch {first['batch_size']} episode(s) per forward",
        "Params: total and trainable, in millions. GFLOPs per episode: torch.utils.flop_counter, "
        "convolutions and matrix products only, 2 FLOPs per multiply-add",
        f"Latency: median of {_plural(first['repeats'], 'timed forward')} after "
        f"{_plural(first['warmup'], 'warm-up forward')}; "
        "FPS = episodes per second",
        f"Peak memory (MB), kind: {join(kinds)}",
        f"Device: {join(devices)}; torch {first.get('torch_version', '?')}, "
        f"{first.get('num_threads', '?')} CPU threads",
    ]
    if spec.caption_extra:
        parts.append(spec.caption_extra.strip())
    return " ".join(p if p.endswith(".") else p + "." for p in parts)


def figure_caption(spec: ReportSpec, protocol: dict[str, Any], text: str) -> str:
    return _ending(spec, protocol, [f"{spec.title}: {text}"])


def diagnostics_caption(spec: ReportSpec, protocol: dict[str, Any], probes: Sequence[str]) -> str:
    probe_text = {
        "base_classes": "Base classes: the same number of episodes of the fold's base classes, drawn from "
        "the val split (classes seen in training, images never seen)",
        "prior_off": "prior_off: the prior map replaced by zeros at inference (the prior-based methods)",
    }
    return _ending(
        spec,
        protocol,
        [
            f"{spec.title}: does each method use its support? Class-wise mIoU (%) on the test episodes, "
            "then with every episode's supports (images and masks) replaced by those of an episode of "
            "another novel class, query and label unchanged (Support swap); Swap drop is the difference in "
            "points. A method that uses its support drops clearly; one that segments every object "
            "whatever its support shows does not, and its score is not a few-shot result",
            *(probe_text.get(p, f"{p}: a probe the method declares") for p in probes),
            "Each cell: mean ± sd over units (fold × train seed)",
        ],
    )


def training_caption(
    spec: ReportSpec,
    protocol: dict[str, Any],
    bound: float,
    fifth: float,
    alpha: float,
    min_lines: int,
) -> str:
    return _ending(
        spec,
        protocol,
        [
            f"{spec.title}: does each method's training loss fall, and has it settled? One row per method, "
            "over its trained runs (fold × train shot × train seed). A logged loss is the mean over the "
            "iterations since the previous log line; the first is the first iteration alone",
            "First, Last: the first and the last logged loss, mean ± sd over runs",
            "Last / first: the smallest and the largest ratio of a run's last to its first logged loss; "
            f"≤ {bound:g} × first: the runs whose loss ended at most {bound:g} times where it started (a run "
            "above hardly learned)",
            f"Last {fifth:.0%}: the mean logged loss over the last {fifth:.0%} of the iterations against "
            f"the {fifth:.0%} before them, in % (mean ± sd over runs): near 0 the loss had settled when "
            "training stopped, clearly negative it was still falling (a longer schedule would change it)",
            f"Settled: of the runs with at least {min_lines} log lines in their last {fifth:.0%} of "
            "iterations, those whose loss shows no downward trend there (least-squares slope over those log "
            f"lines, one-sided t-test, p ≥ {alpha:g}): no longer falling at the end of the schedule; a dash "
            "when no run logs often enough to tell",
        ],
    )
