"""The report's artefacts, declared once: name, kind, title, caption, builder and inputs.

Everything that lists the report's tables and figures reads :data:`ARTEFACTS`: ``fsseg report`` builds
them in this order with their builders (:mod:`fsseg.report.builders`) and writes the README index with
their titles; the Snakemake workflow takes its report targets, the report rule's inputs and the HTML
report's captions (:func:`html_caption`) from it. Adding a figure = one entry here and one builder.

Kept free of heavy imports (no matplotlib, pandas or torch): the workflow's plan imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The saved inputs a builder may read, with what ``fsseg report`` is given for each.
INPUT_KINDS: dict[str, str] = {
    "aggregate": "the aggregate folder of `fsseg aggregate` (evaluations, records, protocol, diagnostics)",
    "spec": "the report spec (runs, families, shots)",
    "efficiency": "`fsseg bench --out` files",
    "predictions": "`fsseg predict` files",
    "train_runs": "each trained run's train_summary.json (its train_log.jsonl lies beside it)",
}

#: Files each kind of artefact is written as, besides ``<name>.caption.txt``.
FORMATS: dict[str, tuple[str, ...]] = {"table": ("md", "tex", "csv"), "figure": ("png", "pdf")}


@dataclass(frozen=True)
class Artefact:
    """One table or figure of the report."""

    name: str
    """File stem under ``tables/`` or ``figures/``."""
    kind: Literal["table", "figure"]
    title: str
    """Heading in the report's README and the HTML report."""
    caption: str
    """What it shows. A figure's caption.txt is this text (``{alpha}``, ``{min_units}`` filled in) plus
    the protocol; a table builds its caption.txt from the data (:mod:`fsseg.report.captions`), and this
    text describes it in the HTML report."""
    builder: str
    """Function of :mod:`fsseg.report.builders` that makes it from a :class:`ReportInputs`."""
    inputs: tuple[str, ...]
    """Kinds of saved input (keys of :data:`INPUT_KINDS`) the builder reads."""

    @property
    def folder(self) -> str:
        return f"{self.kind}s"

    def files(self) -> list[str]:
        """Paths relative to the report folder of every file the report writes for it, caption included."""
        stem = f"{self.folder}/{self.name}"
        return [f"{stem}.{ext}" for ext in FORMATS[self.kind]] + [f"{stem}.caption.txt"]

    def caption_text(self, alpha: float, min_units: int) -> str:
        return self.caption.format(alpha=f"{alpha:g}", min_units=min_units)


_AGG_SPEC = ("aggregate", "spec")

ARTEFACTS: tuple[Artefact, ...] = (
    Artefact(
        "main_miou", "table", "Main comparison: class-wise mIoU",
        "class-wise mIoU on the novel classes per fold and averaged over folds, mean ± sd over training "
        "seeds, for each test shot; methods that do not use their support are marked",
        "main_miou", _AGG_SPEC,
    ),
    Artefact(
        "main_fbiou", "table", "Main comparison: FB-IoU",
        "FB-IoU (the mean of foreground and background IoU, not an mIoU) per fold and averaged over folds, "
        "mean ± sd over training seeds, for each test shot",
        "main_fbiou", _AGG_SPEC,
    ),
    Artefact(
        "ablation", "table", "Ablations",
        "each ablation variant of the flagship against its full model: class-wise mIoU, the paired "
        "difference and its Holm-adjusted significance",
        "ablation", _AGG_SPEC,
    ),
    Artefact(
        "significance", "table", "Significance",
        "paired t-tests over (fold × training seed) units with the mean difference, its 95% CI and the "
        "effect size d_z, a paired bootstrap over the shared episodes, and Holm-adjusted p within each "
        "family of comparisons",
        "significance", _AGG_SPEC,
    ),
    Artefact(
        "efficiency", "table", "Efficiency",
        "total and trainable parameters, FLOPs per episode, latency, FPS and peak memory at the "
        "benchmark's input size, on the device the table's caption names",
        "efficiency", ("spec", "efficiency"),
    ),
    Artefact(
        "diagnostics", "table", "Does each method use its support?",
        "class-wise mIoU on the test episodes, with every episode's supports replaced by those of another "
        "novel class (support swap), on base-class episodes and under each probe the method declares",
        "diagnostics", _AGG_SPEC,
    ),
    Artefact(
        "training", "table", "Does each method's training loss fall and settle?",
        "per trained method, over its runs: the first and last logged training loss, the range of their "
        "ratio, the runs whose loss ended at most 0.7 × where it started, and the loss's change over the "
        "last fifth of training, and the runs whose loss shows no significant downward trend within that "
        "last fifth (settled)",
        "training", (*_AGG_SPEC, "train_runs"),
    ),
    Artefact(
        "per_fold_miou", "figure", "Class mIoU per fold",
        "class-wise mIoU (%) per fold and averaged over folds, one panel per test shot. Bars: mean over "
        "train seeds; whiskers: 95% t confidence interval over train seeds; dots: the individual train "
        "seeds (each averaged over its episode seeds)",
        "per_fold_miou", _AGG_SPEC,
    ),
    Artefact(
        "class_iou_heatmap", "figure", "Per-class IoU",
        "per-class IoU (%) of each method, averaged over train seeds and episode seeds; classes grouped by "
        "the fold in which they are novel",
        "class_iou_heatmap", _AGG_SPEC,
    ),
    Artefact(
        "training_curves", "figure", "Training curves",
        "training loss against iteration, one panel per method; lines: mean over train seeds per fold and "
        "train shot, bands: ± 1 sd over train seeds",
        "training_curves", (*_AGG_SPEC, "train_runs"),
    ),
    Artefact(
        "miou_vs_fps", "figure", "Class mIoU against speed",
        "class-wise mIoU (%) averaged over folds (whiskers: sd over train seeds) against speed (episodes "
        "per second, `fsseg bench`, fp32, benchmark input size)",
        "miou_vs_fps", (*_AGG_SPEC, "efficiency"),
    ),
    Artefact(
        "miou_vs_params", "figure", "Class mIoU against parameters",
        "class-wise mIoU (%) averaged over folds (whiskers: sd over train seeds) against the total number "
        "of parameters",
        "miou_vs_params", (*_AGG_SPEC, "efficiency"),
    ),
    Artefact(
        "paired_differences", "figure", "Paired differences",
        "paired differences Δ = A − B of class-wise mIoU in points: grey dots are the units (fold × train "
        "seed), the red diamond their mean with its 95% t confidence interval; one panel per Holm family; "
        "† marks Holm-adjusted t-test p < {alpha} over at least {min_units} units",
        "paired_differences", _AGG_SPEC,
    ),
    Artefact(
        "qualitative", "figure", "Qualitative examples",
        "test episodes (rows): the first support image with its mask (orange), the query, its ground truth "
        "and each method's prediction (orange, with the episode's foreground IoU); grey: ignored pixels. "
        "Episodes are the first ones of the saved test manifest, not chosen by score",
        "qualitative", ("spec", "predictions"),
    ),
)  # fmt: skip

TABLES: tuple[Artefact, ...] = tuple(a for a in ARTEFACTS if a.kind == "table")
FIGURES: tuple[Artefact, ...] = tuple(a for a in ARTEFACTS if a.kind == "figure")


def artefact(name: str) -> Artefact:
    """The artefact called ``name`` (a ``KeyError`` lists the known ones)."""
    for item in ARTEFACTS:
        if item.name == name:
            return item
    raise KeyError(f"no report artefact {name!r}; known: {', '.join(a.name for a in ARTEFACTS)}")


def input_kinds() -> list[str]:
    """Every kind of input some artefact reads, in :data:`INPUT_KINDS` order."""
    used = {kind for a in ARTEFACTS for kind in a.inputs}
    return [kind for kind in INPUT_KINDS if kind in used]


def html_caption(item: Artefact, alpha: float, min_units: int) -> str:
    """The caption of ``item`` in Snakemake's HTML report (reStructuredText)."""
    shown, *others = FORMATS[item.kind]
    text = item.caption_text(alpha, min_units)
    return (
        f"**{item.title}.** {text[0].upper()}{text[1:]}.\n\n"
        f"In the dataset's report folder: ``{item.folder}/{item.name}.{shown}`` "
        f"({', '.join(others)} beside it); ``{item.name}.caption.txt`` holds its full caption, which "
        "states the protocol.\n"
    )
