"""Report figures (seaborn styling on matplotlib's Agg canvas), each saved as PNG and PDF.

Figures are built on :class:`matplotlib.figure.Figure` objects, never through ``pyplot``, so nothing
depends on (or changes) a global backend or figure registry. Randomness is avoided altogether: seeds
are shown as points with a fixed, evenly spaced offset instead of random jitter, and confidence
intervals are computed here (t intervals over train seeds), not bootstrapped by seaborn. PNG files are
written without the "Software" tag and PDF files without a creation date, so a rerun on the same
inputs and library versions gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fsseg.atomic import write_bytes
from fsseg.report.results import (
    MEAN,
    Cell,
    FamilyResult,
    Run,
    class_iou_means,
    fold_cells,
    run_loss_logs,
    significant,
)
from fsseg.report.spec import RunRef

_DPI = 150
_FOREGROUND = (1.0, 0.35, 0.0)  # overlay colour of masks (orange: visible on aerial greens and greys)
_IGNORE = (0.6, 0.6, 0.6)
_NO_DATA_COLOUR = "0.4"


def _style() -> dict[str, Any]:
    """rc settings of every figure: seaborn's whitegrid/paper look, fixed fonts and hashes."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper")}
    rc.update({"font.family": "DejaVu Sans", "svg.hashsalt": "fsseg", "pdf.fonttype": 42})
    return rc


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically, with no time or software stamps."""
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "ModDate": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=_DPI, metadata=metadata)
        path = stem.with_suffix(f".{ext}")
        write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def palette(labels: Sequence[str]) -> dict[str, Any]:
    """One colour per run label, the same in every figure (colour-blind-safe seaborn palette)."""
    colours = sns.color_palette("colorblind", max(len(labels), 1))
    return {label: colours[i % len(colours)] for i, label in enumerate(labels)}


def _no_data(ax: Any, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=_NO_DATA_COLOUR, wrap=True
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _offsets(n: int, width: float) -> np.ndarray:
    """Evenly spaced offsets in [-width/2, width/2] (deterministic stand-in for jitter)."""
    return np.linspace(-width / 2, width / 2, n) if n > 1 else np.zeros(n)


# ----------------------------------------------------------------------------------------------------------
# Per-fold scores


def per_fold_figure(
    runs: dict[tuple[str, int], Run], refs: Sequence[RunRef], shots: Sequence[int], folds: Sequence[int]
) -> Figure:
    """Bars: mean class mIoU over train seeds per fold (and the mean over folds); whiskers: 95% t CI over
    train seeds; dots: the individual train seeds. One panel per test shot."""
    labels = [r.display for r in refs]
    colours = palette(labels)
    with mpl.rc_context(_style()):
        fig = new_figure(max(6.0, 1.3 * (len(folds) + 1) * max(1, len(labels)) * 0.45 + 2), 3.2 * len(shots))
        axes = fig.subplots(len(shots), 1, squeeze=False)[:, 0]
        keys: list[int | str] = [*folds, MEAN]
        width = 0.8 / max(len(labels), 1)
        for ax, shot in zip(axes, shots, strict=True):
            drawn = False
            for i, label in enumerate(labels):
                run = runs.get((label, shot))
                if run is None:
                    continue
                cells = fold_cells(run.units("miou"), folds)
                x = np.arange(len(keys)) - 0.4 + width * (i + 0.5)
                means = np.array([100 * cells[k].mean for k in keys])
                halves = np.array([100 * cells[k].ci_half for k in keys])
                ax.bar(x, means, width * 0.9, color=colours[label], label=label, alpha=0.85)
                ax.errorbar(x, means, yerr=np.where(np.isnan(halves), 0, halves), fmt="none", ecolor="0.15",
                            capsize=2, linewidth=0.9)  # fmt: skip
                for xi, key in zip(x, keys, strict=True):
                    values = 100 * np.asarray(cells[key].values)
                    ax.scatter(xi + _offsets(values.size, width * 0.5), values, s=7, color="0.1", zorder=3,
                               linewidths=0)  # fmt: skip
                drawn = True
            ax.set_xticks(
                np.arange(len(keys)), [f"fold {k}" if k != MEAN else "mean over folds" for k in keys]
            )
            ax.set_ylabel("class mIoU (%)")
            ax.set_title(f"{shot}-shot")
            ax.set_ylim(bottom=0)
            if not drawn:
                _no_data(ax, f"no {shot}-shot evaluations")
        handles, legend_labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:
            h, lab = ax.get_legend_handles_labels()
            for hh, ll in zip(h, lab, strict=True):
                if ll not in legend_labels:
                    handles.append(hh)
                    legend_labels.append(ll)
        if handles:
            fig.legend(handles, legend_labels, loc="outside right upper", frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Per-class IoU


def class_heatmap_figure(
    runs: dict[tuple[str, int], Run],
    refs: Sequence[RunRef],
    shots: Sequence[int],
    class_columns: Sequence[str],
    class_folds: dict[str, int],
) -> Figure:
    """Methods × classes, per-class IoU in % averaged over train seeds and episode seeds; one panel per
    shot; classes grouped by fold (white lines between folds)."""
    ordered = sorted(class_columns, key=lambda c: (class_folds.get(c, 1 << 30), class_columns.index(c)))
    names = [c.split("__", 1)[1] for c in ordered]
    labels = [r.display for r in refs]
    with mpl.rc_context(_style()):
        fig = new_figure(max(6.0, 0.42 * len(names) + 3), (0.35 * len(labels) + 1.2) * len(shots) + 0.4)
        axes = fig.subplots(len(shots), 1, squeeze=False)[:, 0]
        for ax, shot in zip(axes, shots, strict=True):
            matrix = pd.DataFrame(np.nan, index=labels, columns=names)
            for label in labels:
                run = runs.get((label, shot))
                if run is not None:
                    matrix.loc[label] = 100 * class_iou_means(run, ordered).to_numpy()
            if matrix.isna().all().all():
                _no_data(ax, f"no {shot}-shot evaluations")
                continue
            sns.heatmap(matrix, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f",
                        annot_kws={"fontsize": 6}, cbar_kws={"label": "IoU (%)"}, linewidths=0.3,
                        linecolor="white")  # fmt: skip
            ax.set_title(f"{shot}-shot: per-class IoU (%)")
            ax.set_ylabel("")
            ax.tick_params(axis="x", rotation=60)
            boundaries = [
                i
                for i in range(1, len(ordered))
                if class_folds.get(ordered[i]) != class_folds.get(ordered[i - 1])
            ]
            for b in boundaries:
                ax.axvline(b, color="white", linewidth=2.5)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Training curves


def training_curves_figure(
    runs: dict[tuple[str, int], Run],
    refs: Sequence[RunRef],
    shots: Sequence[int],
    train_logs: Mapping[Path, Path],
) -> Figure:
    """Training loss against iteration, one panel per method; one line per (fold, train shot): the mean
    over train seeds, with a band of ± 1 sd over seeds. ``train_logs`` maps a run folder (resolved) to
    its ``train_log.jsonl``: the logs the report was given, matched to the aggregate's ``run_dir``s."""
    panels = [r for r in refs]
    ncols = min(3, max(len(panels), 1))
    nrows = math.ceil(max(len(panels), 1) / ncols)
    with mpl.rc_context(_style()):
        fig = new_figure(4.0 * ncols, 3.0 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        for ax, ref in zip(axes, panels, strict=False):
            logs = [
                log.assign(fold=fold, train_shot=train_shot, train_seed=seed)
                for (fold, train_shot, seed), log in run_loss_logs(runs, ref, shots, train_logs).items()
            ]
            ax.set_title(ref.display)
            if not logs:
                _no_data(ax, "no training log\n(not trained, or run folder not found)")
                continue
            frame = pd.concat(logs, ignore_index=True)
            groups = sorted(frame.groupby(["fold", "train_shot"]).groups)
            colours = sns.color_palette("deep", len(groups))
            for colour, (fold, train_shot) in zip(colours, groups, strict=True):
                part = frame[(frame["fold"] == fold) & (frame["train_shot"] == train_shot)]
                stats = part.groupby("iteration")["loss"].agg(["mean", "std", "count"]).sort_index()
                x = stats.index.to_numpy()
                n_seeds = int(part["train_seed"].nunique())
                ax.plot(x, stats["mean"], color=colour, linewidth=1.0,
                        label=f"fold {fold}, trained {train_shot}-shot ({n_seeds} seeds)")  # fmt: skip
                sd = stats["std"].fillna(0).to_numpy()
                ax.fill_between(
                    x, stats["mean"] - sd, stats["mean"] + sd, color=colour, alpha=0.2, linewidth=0
                )
            ax.set_xlabel("iteration")
            ax.set_ylabel("training loss")
            ax.legend(fontsize=6, frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Accuracy against cost


def efficiency_lookup(
    rows: Sequence[dict[str, Any]], ref: RunRef, backbone: str, image_size: int, shot: int | None
) -> dict[str, Any] | None:
    """The plain fp32 bench row of a run at the benchmark's input size (and ``shot`` when given)."""
    matches = [
        r
        for r in rows
        if r["method"] == ref.method
        and r["variant"] == ref.variant
        and r.get("backbone", backbone) == backbone
        and not r.get("amp_bf16")
        and not r.get("channels_last")
        and int(r["image_size"]) == int(image_size)
        and (shot is None or int(r["shot"]) == shot)
    ]
    return matches[0] if matches else None


def tradeoff_figure(
    runs: dict[tuple[str, int], Run],
    refs: Sequence[RunRef],
    shots: Sequence[int],
    folds: Sequence[int],
    bench_rows: Sequence[dict[str, Any]],
    image_size: int,
    x_key: str,
) -> Figure:
    """Mean class mIoU (over folds, mean ± sd over train seeds as whiskers) against FPS or parameters.

    ``x_key`` is ``"fps"`` (measured at the same test shot) or ``"params"`` (total parameters, in
    millions; the same for every shot). Markers: one shape per test shot, one colour per method.
    """
    labels = [r.display for r in refs]
    colours = palette(labels)
    markers = ["o", "s", "^", "D", "v", "P"]
    with mpl.rc_context(_style()):
        fig = new_figure(6.5, 4.2)
        ax = fig.subplots()
        points = 0
        for ref in refs:
            labelled = False
            for j, shot in enumerate(shots):
                run = runs.get((ref.display, shot))
                if run is None:
                    continue
                bench = efficiency_lookup(
                    bench_rows, ref, run.backbone, image_size, shot if x_key == "fps" else None
                )
                if bench is None:
                    continue
                cell: Cell = fold_cells(run.units("miou"), folds)[MEAN]
                if math.isnan(cell.mean):
                    continue
                x = bench["fps"] if x_key == "fps" else bench["params_total"] / 1e6
                y, err = 100 * cell.mean, 0 if math.isnan(cell.sd) else 100 * cell.sd
                ax.errorbar([x], [y], yerr=[err], fmt=markers[j % len(markers)], color=colours[ref.display],
                            markersize=6, capsize=2, label=f"{ref.display}, {shot}-shot")  # fmt: skip
                if not labelled:  # one label per method: the marker shape (legend) tells the shot
                    ax.annotate(ref.display, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=6)
                    labelled = True
                points += 1
        if not points:
            _no_data(
                ax, "no efficiency measurements matching the evaluated runs\n(`fsseg bench --out FILE.json`)"
            )
        else:
            if x_key == "fps":
                ax.set_xscale("log")
                ax.set_xlabel(f"FPS (episodes per second, {image_size} px, log scale)")
            else:
                ax.set_xlabel("parameters, total (millions)")
            ax.set_ylabel("class mIoU, mean over folds (%)")
            fig.legend(fontsize=6, frameon=False, loc="outside right upper")
    return fig


# ----------------------------------------------------------------------------------------------------------
# Paired differences


def paired_differences_figure(families: Sequence[FamilyResult], alpha: float) -> Figure:
    """Per comparison: every unit's Δ = A − B (points, in class mIoU points) and the mean with its 95% t
    CI; one panel per Holm family; † marks significance (see :func:`significant`)."""
    families = [f for f in families if f.comparisons] or list(families[:1])
    with mpl.rc_context(_style()):
        heights = [max(1, len(f.comparisons)) * 0.5 + 0.8 for f in families] or [1.5]
        fig = new_figure(6.5, sum(heights) + 0.3)
        axes = fig.subplots(max(len(families), 1), 1, squeeze=False, height_ratios=heights)[:, 0]
        if not families:
            _no_data(axes[0], "no comparisons declared")
            return fig
        for ax, family in zip(axes, families, strict=True):
            ax.set_title(family.name)
            if not family.comparisons:
                _no_data(ax, "no comparison could be made (runs missing)")
                continue
            ylabels = []
            for i, (shot, a, b, c) in enumerate(family.comparisons):
                diffs = 100 * c.scores["diff"].to_numpy()
                y = len(family.comparisons) - 1 - i
                ax.scatter(diffs, y + _offsets(diffs.size, 0.3), s=9, color="0.45", linewidths=0, zorder=2)
                tt = c.ttest
                if not math.isnan(tt.ci_low):
                    ax.errorbar([100 * tt.mean_diff], [y], xerr=[[100 * (tt.mean_diff - tt.ci_low)],
                                [100 * (tt.ci_high - tt.mean_diff)]], fmt="D", color="C3", markersize=5,
                                capsize=3, zorder=3)  # fmt: skip
                else:
                    ax.scatter([100 * tt.mean_diff], [y], marker="D", color="C3", s=25, zorder=3)
                mark = " †" if significant(c, alpha) else ""
                ylabels.append((y, f"{a.label} − {b.label}, {shot}-shot ({c.ttest.n} units){mark}"))
            ax.axvline(0, color="0.2", linewidth=0.8, linestyle="--")
            ax.set_yticks([y for y, _ in ylabels], [t for _, t in ylabels])
            ax.set_ylim(-0.7, len(family.comparisons) - 0.3)
            ax.set_xlabel("Δ class mIoU (points); dots: units, diamond: mean ± 95% CI")
    return fig


# ----------------------------------------------------------------------------------------------------------
# Qualitative grid


def _overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """The image (float RGB in [0, 1]) with ``mask == 1`` tinted and ignored pixels (255) greyed."""
    out = image.astype(np.float64) / 255.0
    fg = mask == 1
    out[fg] = 0.45 * out[fg] + 0.55 * np.asarray(colour)
    ignored = mask == 255
    out[ignored] = 0.5 * out[ignored] + 0.5 * np.asarray(_IGNORE)
    return out


def _outline(ax: Any, mask: np.ndarray) -> None:
    if (mask == 1).any() and (mask != 1).any():
        ax.contour((mask == 1).astype(float), levels=[0.5], colors=[_FOREGROUND], linewidths=0.8)


def _fg_iou(prediction: np.ndarray, label: np.ndarray) -> float:
    valid = label != 255
    pred, true = (prediction == 1) & valid, (label == 1) & valid
    union = int((pred | true).sum())
    return int((pred & true).sum()) / union if union else math.nan


def qualitative_figure(predictions: Sequence[dict[str, Any]], order: Sequence[str], max_rows: int) -> Figure:
    """Rows: episodes; columns: first support with its mask, query, ground truth, each method's prediction.

    ``predictions`` are :func:`fsseg.qualitative.load_predictions` dicts; files of the same episode manifest
    (hash) share rows. ``order`` gives the column order of methods by label.
    """
    from fsseg.qualitative import crop

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for p in predictions:
        groups.setdefault(
            (p["dataset"], p["fold"], p["shot"], p["episode_seed"], p["manifest_hash"]), []
        ).append(p)
    labels = [label for label in order if any(p["label"] == label for p in predictions)]
    labels += sorted({p["label"] for p in predictions} - set(labels))
    rows: list[tuple[tuple, int, dict[str, Any], dict[str, dict[str, Any]]]] = []
    for key in sorted(groups):
        files = groups[key]
        by_label = {p["label"]: p for p in files}
        reference = files[0]
        shared = set(reference["episode_ids"].tolist())
        for p in files[1:]:
            shared &= set(p["episode_ids"].tolist())
        for episode_id in [e for e in reference["episode_ids"].tolist() if e in shared]:
            rows.append((key, episode_id, reference, by_label))
    rows = rows[:max_rows]
    ncols = 3 + len(labels)
    with mpl.rc_context(_style()):
        fig = new_figure(1.6 * ncols, 1.7 * max(len(rows), 1) + 0.3)
        if not rows:
            _no_data(fig.subplots(), "no predictions given (`fsseg predict ... --out FILE.npz`)")
            return fig
        axes = fig.subplots(len(rows), ncols, squeeze=False)
        for r, (key, episode_id, reference, by_label) in enumerate(rows):
            i = reference["episode_ids"].tolist().index(episode_id)
            query = crop(reference["query_images"][i], reference["query_sizes"][i])
            label = crop(reference["query_labels"][i], reference["query_sizes"][i])
            support = crop(reference["support_images"][i, 0], reference["support_sizes"][i, 0])
            support_mask = crop(reference["support_masks"][i, 0], reference["support_sizes"][i, 0])
            shot = int(reference["support_images"].shape[1])
            # (column title, image, mask outlined, note written on the image)
            panels: list[tuple[str, np.ndarray | None, np.ndarray | None, str]] = [
                ("support" + (f" (1 of {shot})" if shot > 1 else "") + "\n+ mask",
                 _overlay(support, support_mask, _FOREGROUND), support_mask, ""),
                ("query", query.astype(np.float64) / 255.0, None, ""),
                ("ground truth", _overlay(query, label, _FOREGROUND), label, ""),
            ]  # fmt: skip
            for method_label in labels:
                p = by_label.get(method_label)
                if p is None or episode_id not in p["episode_ids"].tolist():
                    panels.append((method_label, None, None, ""))
                    continue
                j = p["episode_ids"].tolist().index(episode_id)
                prediction = crop(p["predictions"][j], p["query_sizes"][j])
                iou = _fg_iou(prediction, label)
                note = f"IoU {100 * iou:.0f}%" if not math.isnan(iou) else "IoU undefined"
                panels.append((method_label, _overlay(query, prediction, _FOREGROUND), prediction, note))
            for c, (title, image, mask, note) in enumerate(panels):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if image is None:
                    ax.text(0.5, 0.5, "not predicted", ha="center", va="center", transform=ax.transAxes,
                            fontsize=6, color=_NO_DATA_COLOUR)  # fmt: skip
                else:
                    ax.imshow(image, interpolation="nearest")
                    if mask is not None:
                        _outline(ax, mask)
                if note:
                    box = {"facecolor": "black", "alpha": 0.6, "linewidth": 0, "pad": 1.5}
                    ax.text(0.03, 0.04, note, transform=ax.transAxes, fontsize=6, color="white", bbox=box)
                if r == 0:  # column titles once, at the top
                    ax.set_title(title, fontsize=7)
            _, fold, shot_key, _, _ = key
            class_name = str(reference["class_names"][i])
            axes[r, 0].set_ylabel(f"fold {fold}, {shot_key}-shot\nep. {episode_id}: {class_name}", fontsize=6)
    return fig
