"""``fsseg aggregate``: gather many evaluation folders into one place that the report reads.

Each evaluation folder (written by ``fsseg evaluate``) holds ``summary.json``, ``records.csv`` and
``config.yaml``. Aggregation writes, atomically, into one output folder:

* ``evaluations.csv``: one row per evaluation folder (:data:`EVALUATION_COLUMNS`, then one
  ``iou__<class name>`` column per class, in class-id order; classes outside a folder's fold are empty);
* ``records.csv.gz``: every folder's per-episode records, concatenated in the ``records.csv`` layout
  (gzip with mtime 0 and no file name, so the bytes depend on the content only);
* ``protocol.json``: the protocol facts captions state (dataset and its options, episodes, seeds, image
  size, label resolution, train filter, object-size threshold, checkpoint selection, backbones), read
  from the folders' ``config.yaml``. A fact every number must share (:data:`SHARED_FACTS`) that differs
  between folders is an error naming the folders, because no table could state it in one caption.

Rows are sorted by run identity (not by argument order), so the outputs do not depend on how the shell
or the workflow listed the folders. Nothing is re-run and nothing outside the folders is read.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fsseg import paths
from fsseg.atomic import write_bytes, write_json, write_text
from fsseg.config import read_yaml
from fsseg.errors import DataError, FssegError
from fsseg.keys import BY_NAME, EVAL_KEY, SORT_ORDER, TEXT_COLUMNS
from fsseg.records import EVALUATION_KEYS, RECORD_COLUMNS, SUMMARY_KEYS

EVALUATIONS_FILE = "evaluations.csv"
RECORDS_FILE = "records.csv.gz"
PROTOCOL_FILE = "protocol.json"
DIAGNOSTICS_TABLE_FILE = "diagnostics.csv"
CLASS_PREFIX = "iou__"
#: Columns of ``diagnostics.csv`` before the scores (one ``score__<name>`` column per diagnostic): the
#: evaluation key of :mod:`fsseg.keys`, so a new key field reaches this table without an edit here.
DIAGNOSTIC_KEY = EVAL_KEY
SCORE_PREFIX = "score__"

EVALUATION_COLUMNS = (
    *EVALUATION_KEYS,
    "n_episodes",
    "manifest_hash",
    "miou",
    "fbiou",
    "episode_miou",
    "image_size",
    "label_resolution",
    "device",
    "model_ms_per_episode",
    "eval_dir",
    "run_dir",
)
#: Columns that name one evaluation, in the order rows are sorted; two folders with the same values are the
#: same evaluation twice.
EVALUATION_KEY = SORT_ORDER
_MAX_LISTED = 6


# ----------------------------------------------------------------------------------------------------------
# Protocol facts


def _selection(cfg: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint selection; validation settings only matter (and are only stated) for ``best_val``."""
    train = cfg["train"]
    out: dict[str, Any] = {"selection": train["selection"]}
    if train["selection"] == "best_val":
        out.update(
            val_episodes=train["val_episodes"],
            val_episode_seed=train["val_episode_seed"],
            val_every=train["val_every"],
        )
    return out


#: Facts every evaluation of one report must share: a caption states each once.
SHARED_FACTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "dataset": lambda c: c["dataset"]["name"],
    "dataset_options": lambda c: c["dataset"].get("options", {}),
    "eval_split": lambda c: c["eval"]["split"],
    "n_episodes": lambda c: c["eval"]["n_episodes"],
    "sampler": lambda c: c["eval"].get("sampler", "balanced"),
    "protocol": lambda c: c.get("protocol"),
    "label_resolution": lambda c: c["dataset"]["label_resolution"],
    "train_filter": lambda c: c["dataset"]["train_filter"],
    "min_object_px": lambda c: c["dataset"]["min_object_px"],
    "checkpoint_selection": _selection,
}


def _weights_text(cfg: dict[str, Any]) -> str:
    """The backbone's weights; for ``fold_pretrained`` also what ``fsseg pretrain`` trained it on."""
    weights = cfg["backbone"]["weights"]
    if weights != "fold_pretrained":
        return weights
    if cfg.get("pretrain", {}).get("classes") == "auxiliary":
        return "fold_pretrained: pretrained once on the dataset's auxiliary classes, which are in no fold"
    return "fold_pretrained: pretrained on each fold's base classes"


#: Facts that may vary (they are axes of the grid or per-method choices); the protocol lists their values.
LISTED_FACTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "folds": lambda c: c["fold"],
    "shots": lambda c: c["eval"]["shot"],
    "train_shots": lambda c: c["train"]["shot"],
    "train_seeds": lambda c: c["train"]["train_seed"],
    "episode_seeds": lambda c: c["eval"]["episode_seed"],
    "backbones": lambda c: c["backbone"]["name"],
    "backbone_weights": lambda c: _weights_text(c),
    "output_strides": lambda c: c["backbone"]["output_stride"],
}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _listing(items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown.append(f"... ({len(items) - _MAX_LISTED} more)")
    return ", ".join(shown)


def _disagreement(fact: str, values_by_folder: dict[str, list[str]]) -> str:
    parts = [f"{value} in {_listing(folders)}" for value, folders in sorted(values_by_folder.items())]
    return f"{fact}: " + "; ".join(parts)


def protocol_facts(configs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The protocol of a set of evaluations from their ``(folder, config dict)`` pairs.

    Raises :class:`~fsseg.errors.FssegError` naming the folders when a shared fact differs, or when one
    method variant was run with different parameters (the variant name would then stand for two models).
    """
    problems = []
    protocol: dict[str, Any] = {}
    for fact, get in SHARED_FACTS.items():
        seen: dict[str, list[str]] = {}
        for folder, cfg in configs:
            seen.setdefault(_canonical(get(cfg)), []).append(folder)
        if len(seen) > 1:
            problems.append(_disagreement(fact, seen))
        else:
            protocol[fact] = json.loads(next(iter(seen)))
    for fact, get in LISTED_FACTS.items():
        protocol[fact] = sorted({get(cfg) for _, cfg in configs})
    # The input size may be a method's own (PANet's official 417 px against 473), never a run's:
    # one size per method variant, stated per method in the caption where they differ.
    sizes: dict[str, dict[str, list[str]]] = {}
    for folder, cfg in configs:
        key = f"{cfg['method']['name']}-{cfg['method']['variant']}"
        sizes.setdefault(key, {}).setdefault(str(cfg["dataset"]["image_size"]), []).append(folder)
    for key, seen in sorted(sizes.items()):
        if len(seen) > 1:
            problems.append(_disagreement(f"image_size of {key}", seen))
    protocol["image_sizes"] = {key: int(next(iter(seen))) for key, seen in sorted(sizes.items())}
    protocol["image_size"] = Counter(protocol["image_sizes"].values()).most_common(1)[0][0]

    runs: dict[str, dict[str, Any]] = {}
    params_seen: dict[str, dict[str, list[str]]] = {}
    for folder, cfg in configs:
        method, variant = cfg["method"]["name"], cfg["method"]["variant"]
        key = f"{method}-{variant}"
        params_seen.setdefault(key, {}).setdefault(_canonical(cfg["method"]["params"]), []).append(folder)
        run = runs.setdefault(key, {"method": method, "variant": variant, "params": cfg["method"]["params"]})
        # Training settings may differ per train shot or backbone; they are listed, not checked.
        for name, value in (
            ("backbones", cfg["backbone"]["name"]),
            *(
                (f"train_{f}", cfg["train"].get(f))
                for f in ("recipe", "iterations", "batch_size", "optimizer")
            ),
        ):
            values = run.setdefault(name, [])
            if value not in values:
                values.append(value)
    for key, seen in params_seen.items():
        if len(seen) > 1:
            problems.append(_disagreement(f"method.params of {key}", seen))
    if problems:
        raise FssegError(
            "the evaluation folders disagree on protocol facts that one report must share "
            "(aggregate them separately): " + " | ".join(problems)
        )
    protocol["runs"] = {key: runs[key] for key in sorted(runs)}
    protocol["n_evaluations"] = len(configs)
    return protocol


# ----------------------------------------------------------------------------------------------------------
# Reading evaluation folders


@dataclass
class Evaluation:
    """One evaluation folder, read and checked."""

    folder: str
    config: dict[str, Any]
    summary: dict[str, Any]
    record_text: list[str]  # data lines of records.csv, unchanged
    class_iou: dict[int, tuple[str, float]]  # class id → (name, IoU)

    def row(self) -> dict[str, Any]:
        s, cfg = self.summary, self.config
        eval_dir = Path(self.folder)
        # The engine writes evaluations to <run_dir>/eval/<name>; the run folder holds train_log.jsonl.
        run_dir = str(eval_dir.parent.parent) if eval_dir.parent.name == "eval" else ""
        return {
            "run_id": s["run_id"],
            **{name: _key_value(name, s, cfg) for name in EVAL_KEY},
            "n_episodes": int(s["metrics"]["n_episodes"]),
            "manifest_hash": s["manifest_hash"],
            "miou": s["metrics"]["miou"],
            "fbiou": s["metrics"]["fbiou"],
            "episode_miou": s["metrics"]["episode_miou"],
            "image_size": s["image_size"],
            "label_resolution": s["label_resolution"],
            "device": s["device"],
            "model_ms_per_episode": s.get("timing", {}).get("model_ms_per_episode"),
            "eval_dir": self.folder,
            "run_dir": run_dir,
        }

    def sort_key(self) -> tuple:
        row = self.row()
        return (*(row[c] for c in EVALUATION_KEY), row["n_episodes"], self.folder)


def _key_value(name: str, summary: dict[str, Any], config: dict[str, Any]) -> Any:
    """A key field of an evaluation folder: from its summary, else (the backbone) from its config.yaml."""
    field = BY_NAME[name]
    if name in summary:
        return field.parse(summary[name])
    value: Any = config
    for part in field.source.split("."):
        value = value[part]
    return field.parse(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist: is {path.parent} an evaluation folder (`fsseg evaluate`)?"
        ) from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None


def read_evaluation(folder: str | Path) -> Evaluation:
    """Read one evaluation folder and check that its records agree with its summary."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"evaluation folder {path} does not exist")
    summary = _read_json(path / paths.SUMMARY_FILE)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path} does not exist: is {path} an evaluation folder (`fsseg evaluate`)?")
    config = read_yaml(config_path)
    records_path = path / paths.RECORDS_FILE
    try:
        lines = records_path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{records_path} does not exist") from None
    if not lines or tuple(next(csv.reader([lines[0]]))) != RECORD_COLUMNS:
        raise DataError(
            f"{records_path} does not have the records.csv header of this fsseg version "
            f"({','.join(RECORD_COLUMNS)}); re-run `fsseg evaluate`"
        )
    data = [line for line in lines[1:] if line]
    n_expected = int(summary["metrics"]["n_episodes"])
    if len(data) != n_expected:
        raise DataError(
            f"{records_path} has {len(data)} episode rows but {path / paths.SUMMARY_FILE} counts "
            f"{n_expected} (truncated or edited?)"
        )
    # Identity columns must agree with the summary: a records file copied into the wrong folder would
    # otherwise be aggregated under another run's name.
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    names: dict[int, str] = {}
    for row in reader:
        for column in SUMMARY_KEYS:
            if str(row[column]) != str(summary[column]):
                raise DataError(
                    f"{records_path}: column {column} holds {row[column]!r} but the summary says "
                    f"{summary[column]!r}"
                )
        names[int(row["class_id"])] = row["class_name"]
    # Every class the summary scores has episodes (summarize refuses otherwise), so its name is in the rows.
    class_iou = {int(c): (names[int(c)], v) for c, v in summary["metrics"]["class_iou"].items()}
    return Evaluation(str(folder), config, summary, data, class_iou)


def read_eval_list(path: str | Path) -> list[str]:
    """Folders listed in a text file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise FssegError(f"cannot read the list of evaluation folders {path}: {err.strerror}") from None
    return [s for line in text.splitlines() if (s := line.split("#", 1)[0].strip())]


# ----------------------------------------------------------------------------------------------------------
# Writing


def _cell(value: Any) -> str:
    """CSV text of one value: floats in full precision (repr), missing values empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _gzip(text: str) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and an empty file name: the gzip header then carries nothing but the content.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as handle:
        handle.write(text.encode())
    return buffer.getvalue()


def aggregate(eval_dirs: Iterable[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Aggregate evaluation folders into ``out_dir``; returns the protocol facts.

    The same folder named twice counts once; two folders holding the same evaluation (same run, test shot
    and episode seed) are an error naming both.
    """
    folders = list(dict.fromkeys(str(d) for d in eval_dirs))
    if not folders:
        raise FssegError("no evaluation folders given (--evals DIR ... or --evals-from FILE)")
    evaluations = sorted((read_evaluation(f) for f in folders), key=Evaluation.sort_key)

    seen: dict[tuple, str] = {}
    for ev in evaluations:
        row = ev.row()
        key = tuple(row[c] for c in EVALUATION_KEY)
        if key in seen:
            described = ", ".join(f"{c}={v}" for c, v in zip(EVALUATION_KEY, key, strict=True))
            raise FssegError(
                f"{seen[key]} and {ev.folder} hold the same evaluation ({described}); keep one of them "
                "(an untrained reference or an evaluation on another number of episodes?)"
            )
        seen[key] = ev.folder
    protocol = protocol_facts([(ev.folder, ev.config) for ev in evaluations])

    classes: dict[int, str] = {}
    for ev in evaluations:
        for cid, (name, _) in ev.class_iou.items():
            classes.setdefault(cid, name)
    class_columns = [f"{CLASS_PREFIX}{classes[cid]}" for cid in sorted(classes)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*EVALUATION_COLUMNS, *class_columns])
    for ev in evaluations:
        row = ev.row()
        ious = {f"{CLASS_PREFIX}{name}": value for name, value in ev.class_iou.values()}
        writer.writerow(
            [_cell(row[c]) for c in EVALUATION_COLUMNS] + [_cell(ious.get(c)) for c in class_columns]
        )

    header = ",".join(RECORD_COLUMNS)
    records = "\n".join([header, *(line for ev in evaluations for line in ev.record_text)]) + "\n"
    protocol["classes"] = {str(cid): classes[cid] for cid in sorted(classes)}

    out = Path(out_dir)
    write_text(out / DIAGNOSTICS_TABLE_FILE, _diagnostics_csv(evaluations))
    write_text(out / EVALUATIONS_FILE, buffer.getvalue())
    write_bytes(out / RECORDS_FILE, _gzip(records))
    write_json(out / PROTOCOL_FILE, protocol)
    return protocol


def _diagnostics_csv(evaluations: Sequence[Evaluation]) -> str:
    """One row per diagnosed evaluation (its ``diagnostics.json``): identity, then every score."""
    rows = []
    for ev in evaluations:
        path = Path(ev.folder) / paths.DIAGNOSTICS_FILE
        if not path.is_file():
            continue
        document = _read_json(path)
        try:
            scores = {str(k): float(v) for k, v in document["scores"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            raise DataError(f"{path} is not an `fsseg evaluate --diagnose` file ({err!r})") from None
        row = ev.row()
        rows.append(({c: row[c] for c in DIAGNOSTIC_KEY}, scores))
    names = sorted({name for _, scores in rows for name in scores})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*DIAGNOSTIC_KEY, *(f"{SCORE_PREFIX}{n}" for n in names)])
    for key, scores in rows:
        writer.writerow([_cell(key[c]) for c in DIAGNOSTIC_KEY] + [_cell(scores.get(n)) for n in names])
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------
# Reading an aggregate back


@dataclass
class Aggregate:
    """What ``fsseg aggregate`` wrote: evaluations (one row per folder), per-episode records, protocol."""

    evaluations: pd.DataFrame
    records: pd.DataFrame
    protocol: dict[str, Any]
    folder: Path
    diagnostics: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per diagnosed evaluation (empty when none was diagnosed)."""

    @property
    def class_columns(self) -> list[str]:
        return [c for c in self.evaluations.columns if c.startswith(CLASS_PREFIX)]


def load_aggregate(folder: str | Path) -> Aggregate:
    """Read an aggregate folder; records get the typed columns of :func:`fsseg.compare.read_record_file`."""
    from fsseg.compare import read_record_file

    folder = Path(folder)
    for name in (EVALUATIONS_FILE, RECORDS_FILE, PROTOCOL_FILE):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name} does not exist; run `fsseg aggregate --out {folder}` first")
    text_columns = {"run_id": str, **dict.fromkeys(TEXT_COLUMNS, str)}
    evaluations = pd.read_csv(
        folder / EVALUATIONS_FILE,
        dtype={**text_columns, "manifest_hash": str, "eval_dir": str, "run_dir": str, "device": str},
        keep_default_na=False,
        na_values={c: [""] for c in ("miou", "fbiou", "episode_miou", "model_ms_per_episode")},
    )
    for column in [c for c in evaluations.columns if c.startswith(CLASS_PREFIX)]:
        evaluations[column] = pd.to_numeric(evaluations[column].replace("", float("nan")))
    # The records keep their own origin (run_id) for the statistics' checks; the loader's folder column
    # would name this aggregate, the same for every row, and hide repeated evaluations.
    records = read_record_file(folder / RECORDS_FILE).drop(columns=["source"])
    protocol = json.loads((folder / PROTOCOL_FILE).read_text())
    diagnostics_path = folder / DIAGNOSTICS_TABLE_FILE
    diagnostics = (
        pd.read_csv(diagnostics_path, dtype=dict.fromkeys(TEXT_COLUMNS, str))
        if diagnostics_path.is_file()
        else pd.DataFrame(columns=list(DIAGNOSTIC_KEY))
    )
    return Aggregate(evaluations, records, protocol, folder, diagnostics)
