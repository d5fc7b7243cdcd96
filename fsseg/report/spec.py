"""The report spec (``SPEC.yaml``, written by the workflow): which runs a report compares, and how.

.. code-block:: yaml

    dataset: synthetic
    title: Synthetic aerial benchmark
    flagship: {method: dsmfnet, variant: default}
    baselines: [{method: colour_floor}, {method: panet}, {method: pfenet}]
    ablations: [{method: dsmfnet, variant: gpml_conv}, {method: dsmfnet, variant: sff_off}]
    shots: [1, 5]
    bootstrap: {iterations: 2000, seed: 0}
    caption_extra: Reduced CPU recipes; see config/default.yaml.

A run reference may also name its ``backbone`` (needed only when the aggregate holds one method variant
with several backbones) and a display ``label`` (default: the method name, with the variant in
parentheses unless it is ``default``). Unknown keys are errors, as in every fsseg config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fsseg.config import read_yaml
from fsseg.errors import ConfigError
from fsseg.schema import from_dict, opt

# With two units the paired t-test has one degree of freedom: two nearly equal differences give a tiny
# p and a huge d_z by chance, so a comparison is marked significant (p < ReportSpec.alpha) only from this
# many units on.
MIN_UNITS_TO_MARK = 3


@dataclass
class RunRef:
    """One method variant as the report names it."""

    method: str = opt(help="registered method name")
    variant: str = opt("default", help="method variant (ablation)")
    backbone: str | None = opt(None, help="backbone name, when the aggregate holds several for this variant")
    label: str | None = opt(None, help="name shown in tables and figures")

    @property
    def key(self) -> str:
        """``method-variant``, the key of :func:`fsseg.aggregate.protocol_facts`' ``runs``."""
        return f"{self.method}-{self.variant}"

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        return self.method if self.variant == "default" else f"{self.method} ({self.variant})"


@dataclass
class BootstrapSpec:
    iterations: int = opt(
        2000, help="paired bootstrap resamples per comparison (0 skips the bootstrap)", ge=0
    )
    seed: int = opt(0, help="bootstrap seed (the same for every comparison: common random numbers)", ge=0)


@dataclass
class ReportSpec:
    dataset: str = opt(help="dataset the report covers (must match the aggregate)")
    flagship: RunRef = opt(help="the method the report is about; its variant is the full model")
    baselines: list[RunRef] = opt([], help="methods compared with the flagship (one Holm family per shot)")
    ablations: list[RunRef] = opt([], help="variants compared with the full model (one Holm family)")
    shots: list[int] = opt([1, 5], help="test shots shown, in this order")
    bootstrap: BootstrapSpec = opt(BootstrapSpec())
    title: str = opt("Few-shot segmentation benchmark", help="report title (first words of every caption)")
    caption_extra: str = opt("", help="sentence appended to every caption")
    alpha: float = opt(0.05, help="level at which a Holm-adjusted p is marked", gt=0, lt=1)
    qualitative_rows: int = opt(8, help="at most this many episodes in the qualitative grid", ge=1)
    min_swap_drop: float = opt(
        2.0,
        help="points of class mIoU a method must lose under a support swap (diagnostics, smallest "
        "diagnosed shot) for its main-table scores to count as few-shot results; the main tables mark "
        "the methods below it",
        ge=0,
    )

    def validate(self, path: str) -> None:
        labels = [r.display for r in self.main_runs + self.ablations]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(
                f"{path}: run labels repeat: {', '.join(repeated)} (give each a distinct label)"
            )
        if not self.shots or len(set(self.shots)) != len(self.shots):
            raise ConfigError(f"{path}.shots: give each test shot once, got {self.shots}")

    @property
    def main_runs(self) -> list[RunRef]:
        """Rows of the main tables: the baselines in spec order, then the flagship."""
        return [*self.baselines, self.flagship]

    @property
    def all_runs(self) -> list[RunRef]:
        return [*self.main_runs, *self.ablations]


def load_spec(path: str | Path) -> ReportSpec:
    """Read and validate a report spec file."""
    return from_dict(ReportSpec, read_yaml(path), f"spec {path}")
