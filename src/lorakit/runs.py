"""What a pulled version folder says about its run: metrics.json and the validation predictions of logits.npz.

The one reader of a pulled run for `versions`, `compare`, `sweep` and `report`. A folder is untrusted input:
logits.npz is read with pickles refused, and anything missing or malformed becomes the version's ``reason``
("not comparable: ...") rather than an exception, so one bad folder never hides the others.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lorakit.common import AG_NEWS_ROWS, LABELS, device_of, metrics_read, train_minutes_of
from lorakit.errors import UsageError
from lorakit.project import KernelRef, Project
from lorakit.stats import LEVEL, accuracy_interval, finite_number, mcnemar_exact, rows_to_tell_paired

VAL_KEYS = ("val_logits", "val_labels", "val_ids", "val_ids_sha256")


@dataclass(frozen=True)
class ValPredictions:
    """One run's validation slice: row ids in the training source, true labels, predicted labels."""

    ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    sha256: str

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels


def _recall_per_class(metrics: dict, val: Optional[ValPredictions]) -> Optional[dict]:
    """Validation recall per class: metrics.json's per_class_val_accuracy, else from the validation predictions."""
    given = metrics.get("per_class_val_accuracy")
    if isinstance(given, dict) and all(name in given for name in LABELS):
        return {name: finite_number(given[name]) for name in LABELS}
    if val is None:
        return None
    labels, correct = val.labels, val.correct
    return {name: float(correct[labels == k].mean()) if (labels == k).any() else None
            for k, name in enumerate(LABELS)}


def run_numbers(metrics: Optional[dict], val: Optional[ValPredictions]) -> dict:
    """One run's numbers (versions, compare, sweep, report), from its metrics.json and validation predictions (each None where
    neither says)."""
    metrics = metrics or {}
    accuracy, rows = finite_number(metrics.get("val_accuracy")), finite_number(metrics.get("val_rows"))
    if accuracy is None or not 0 <= accuracy <= 1:  # absent or nonsense: what the predictions say
        accuracy = None if val is None else float(val.correct.mean())
    if rows is None or rows < 1:
        rows = None if val is None else len(val.ids)
    rows = None if rows is None else int(rows)
    interval = None if accuracy is None or rows is None else list(accuracy_interval(accuracy, rows))
    params = finite_number(metrics.get("trainable_params"))
    return {"val_accuracy": accuracy, "val_rows": rows, "val_interval": interval,
            "per_class_recall": _recall_per_class(metrics, val), "train_minutes": train_minutes_of(metrics),
            "trainable_params": None if params is None else int(params), "device": device_of(metrics) or None}


@dataclass(frozen=True)
class PulledRun:
    version: int
    folder: Path
    metrics: Optional[dict]  # metrics.json; None when absent or unreadable (see reason)
    val: Optional[ValPredictions]  # None when logits.npz is absent, old or unreadable (see reason)
    reason: str = ""  # why this run cannot be paired with another: "" when it can

    @property
    def pulled(self) -> bool:
        return self.folder.is_dir()

    def numbers(self) -> dict:
        """run_numbers of this run's metrics.json and validation predictions."""
        return run_numbers(self.metrics, self.val)


def pull_command(version: int, kernel: Optional[KernelRef], project: Project) -> str:
    """The command that pulls ``version`` (with --kernel when it is not the project's own kernel)."""
    other = kernel is not None and project.home is not None and not kernel.same_as(project.home)
    return f"lorakit pull {version}" + (f" --kernel {kernel}" if other else "")


def pulled_run_load(project: Project, version: int, kernel: Optional[KernelRef] = None) -> PulledRun:
    """The run of ``version`` as its pulled folder holds it; never raises for what the folder lacks."""
    folder = project.version_dir(version, kernel)
    if not folder.is_dir():
        return PulledRun(version, folder, None, None,
                         f"v{version} is not pulled: run `{pull_command(version, kernel, project)}`")
    metrics, why = _metrics_load(folder)
    val, why_val = _val_load(folder)
    return PulledRun(version, folder, metrics, val, why or why_val)


def _metrics_load(folder: Path) -> tuple[Optional[dict], str]:
    try:
        metrics = metrics_read(folder)
    except UsageError as exc:  # not a JSON object (cut short, edited by hand)
        return None, str(exc)
    return metrics, "" if metrics is not None else f"{folder / 'metrics.json'} is missing (the run did not finish?)"


def _val_load(folder: Path) -> tuple[Optional[ValPredictions], str]:
    path = folder / "logits.npz"
    if not path.is_file():
        return None, f"{path} is missing: no validation predictions to pair"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in VAL_KEYS if k not in npz.files]
            if missing:
                return None, f"{path} has no {', '.join(missing)} (a run from before paired validation)"
            logits, labels, ids = npz["val_logits"], npz["val_labels"], npz["val_ids"]
            sha = str(npz["val_ids_sha256"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        return None, f"{path} is not a readable npz ({type(exc).__name__})"
    if logits.ndim != 2 or not (len(logits) == len(labels) == len(ids)) or len(ids) == 0:
        return None, f"{path}: val_logits, val_labels and val_ids do not line up"
    return ValPredictions(ids.astype(np.int64), labels.astype(np.int64), logits.argmax(axis=1), sha), ""


def config_diff(before: dict, after: dict) -> dict:
    """key -> (before, after) for every key whose value differs (a key one side lacks reads as None)."""
    return {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)}


@dataclass(frozen=True)
class Paired:
    """Two runs on the same validation rows: b rows only A got right, c rows only B got right."""

    rows: int
    a_wins: int
    b_wins: int
    p_value: float


def paired_test(a: PulledRun, b: PulledRun) -> Paired:
    """The exact McNemar test of ``a`` against ``b`` on their shared validation slice; UsageError saying
    why when they cannot be paired (a reason of either, or slices that differ)."""
    for run in (a, b):
        if run.reason:
            raise UsageError(f"v{run.version} is not comparable: {run.reason}")
    if a.val.sha256 != b.val.sha256:
        raise UsageError(f"v{a.version} and v{b.version} validated on different rows (val_ids_sha256 differ): "
                         "train_data, max_train_samples, val_fraction or seed changed, so no paired test")
    order_a, order_b = np.argsort(a.val.ids, kind="stable"), np.argsort(b.val.ids, kind="stable")
    right_a, right_b = a.val.correct[order_a], b.val.correct[order_b]
    a_wins, b_wins = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return Paired(len(right_a), a_wins, b_wins, mcnemar_exact(a_wins, b_wins))


def noise_words(a: str, b: str, paired: Paired, adjusted: Optional[float] = None) -> str:
    """"" when the paired test tells ``a`` and ``b`` apart (on ``adjusted``, a Holm-adjusted p-value, when
    given); else that their validation rows cannot, and roughly how many rows would (stats.rows_to_tell_paired)."""
    if (paired.p_value if adjusted is None else adjusted) < LEVEL and paired.a_wins != paired.b_wins:
        return ""
    head = f"the {paired.rows:,} shared validation rows cannot tell {a} and {b} apart"
    if paired.a_wins + paired.b_wins == 0:
        return f"{head}: they get the very same rows right"
    need = rows_to_tell_paired(paired.a_wins, paired.b_wins, paired.rows)
    if need is None:
        return f"{head}: each is right where the other is wrong as often, so no number of rows would"
    beyond = f", more than AG News' {AG_NEWS_ROWS:,} training rows: take them as equally good"
    return (f"{head}; roughly {need:,} would (if they differed as here: {paired.a_wins} rows to {paired.b_wins}; "
            "p < 0.05 four times in five)" + (beyond if need > AG_NEWS_ROWS else ""))
