"""What a pulled version folder says about its run: metrics.json and the validation predictions of logits.npz.

The one reader of a pulled run for `versions`, `compare`, `sweep`, `report` and `pull`. A folder is untrusted
input, checked where it is read: metrics.json as common.metrics_parse says (size, depth, ranges); logits.npz
with pickles refused, each array's shape and type read from its header and bounded before anything is
allocated, ids and labels of equal length, labels in range, logits finite, and the digest of the validation
rows recomputed (a stored val_ids_sha256 that is not theirs is a damaged file). Anything missing or damaged
becomes the version's ``reason`` ("not comparable: ...", ``damage`` when a file is not what a run writes)
rather than an exception, so one bad folder never hides the others.
"""

from __future__ import annotations

import hashlib
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
VAL_ROWS_MAX = 1_000_000  # validation rows lorakit reads (AG News' training split has 120,000): ~100 MB at most


@dataclass(frozen=True)
class ValPredictions:
    """One run's validation slice: row ids in the training source, true labels, predicted labels."""

    ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    sha256: str  # val_ids_sha256, recomputed from ids and labels as the kernel computes it (in the file's order)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def rows_digest(self) -> str:
        """The digest of the rows and their labels in id order: equal for two runs on the same validation rows,
        whatever order each file holds them in (they pair by id)."""
        order = np.argsort(self.ids, kind="stable")
        return _digest(self.ids[order], self.labels[order])


def _digest(ids: np.ndarray, labels: np.ndarray) -> str:
    """The kernel's val_ids_sha256 of ``ids`` and ``labels``."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()
                          + np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


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
    damage: str = ""  # what of its files is not what a run writes (the reason, or fields read as unknown); "" if none

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
    metrics, missing, damage, problems = None, "", "", []
    try:
        metrics = metrics_read(folder, problems)
    except UsageError as exc:  # cut short, edited by hand, or no run's at all
        damage = str(exc)
    if metrics is None and not damage:
        missing = f"{folder / 'metrics.json'} is missing (the run did not finish?)"
    val, why_val = None, ""
    try:
        val, why_val = _val_load(folder)
    except Damaged as exc:
        damage = damage or str(exc)
    damage = damage or _rows_disagree(folder, metrics, val)
    return PulledRun(version, folder, metrics, None if damage else val, damage or missing or why_val,
                     damage or "; ".join(problems))


class Damaged(UsageError):
    """A pulled file that is not what a run writes."""


def _rows_disagree(folder: Path, metrics: Optional[dict], val: Optional[ValPredictions]) -> str:
    """Why metrics.json's val_rows and logits.npz's rows cannot both be true ("" when they agree)."""
    said = (metrics or {}).get("val_rows")
    if val is None or said is None or int(said) == len(val.ids):
        return ""
    return f"{folder / 'logits.npz'} holds {len(val.ids):,} validation rows, but metrics.json says {int(said):,}"


def _val_load(folder: Path) -> tuple[Optional[ValPredictions], str]:
    """The validation predictions of logits.npz, or None and why (missing, from before paired validation);
    Damaged when the file is not what a run writes."""
    path = folder / "logits.npz"
    if not path.is_file():
        return None, f"{path} is missing: no validation predictions to pair"
    try:
        missing = _npz_headers_check(path)
        if missing:
            return None, f"{path} has no {', '.join(missing)} (a run from before paired validation)"
        with np.load(path, allow_pickle=False) as npz:
            logits, labels, ids = npz["val_logits"], npz["val_labels"], npz["val_ids"]
            stored = str(npz["val_ids_sha256"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise Damaged(f"{path} is not a readable npz ({type(exc).__name__})") from None
    return _val_checked(path, logits, labels, ids, stored), ""


def _npz_headers_check(path: Path) -> list:
    """The validation keys logits.npz lacks; Damaged when an array's header (shape, type) is not what the
    kernel writes, or claims more than VAL_ROWS_MAX rows: checked before any array is allocated."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        missing = [k for k in VAL_KEYS if f"{k}.npy" not in names]
        for key in () if missing else VAL_KEYS:
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise Damaged(f"{path}: {key} is in npy format {version}, not one numpy writes for it")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _fortran, dtype = read(member)
            problem = _header_problem(key, shape, dtype)
            if problem:
                raise Damaged(f"{path}: {key} {problem}")
    return missing


def _header_problem(key: str, shape: tuple, dtype: np.dtype) -> str:
    """What is wrong with an array's header, for the kernel's validation keys ("" when nothing)."""
    if key == "val_ids_sha256":
        return "" if shape in ((), (1,)) and dtype.kind in "US" and dtype.itemsize <= 512 else "is not a digest"
    rows = shape[0] if shape else 0
    if key == "val_logits":
        fits = len(shape) == 2 and shape[1] == len(LABELS) and dtype.kind == "f" and dtype.itemsize <= 8
        kind = f"is not a float array of {len(LABELS)} columns"
    else:
        fits = len(shape) == 1 and dtype.kind in "iu" and dtype.itemsize <= 8
        kind = "is not an integer array"
    if not fits:
        return f"{kind} (shape {shape}, {dtype})"
    if not 1 <= rows <= VAL_ROWS_MAX:
        return f"claims {rows:,} rows (a run's validation slice has 1 to {VAL_ROWS_MAX:,})"
    return ""


def _val_checked(path: Path, logits, labels, ids, stored: str) -> ValPredictions:
    """The validation predictions once they hold together; Damaged naming what does not."""
    if not len(logits) == len(labels) == len(ids):
        raise Damaged(f"{path}: val_logits, val_labels and val_ids have {len(logits)}, {len(labels)} and "
                      f"{len(ids)} rows: they do not line up")
    labels, ids = labels.astype(np.int64), ids.astype(np.int64)
    if labels.min() < 0 or labels.max() >= len(LABELS):
        raise Damaged(f"{path}: val_labels holds {int(labels.min() if labels.min() < 0 else labels.max())}; "
                      f"labels are 0-{len(LABELS) - 1}")
    if not np.isfinite(logits).all():
        raise Damaged(f"{path}: val_logits holds numbers that are not finite")
    if len(np.unique(ids)) != len(ids):
        raise Damaged(f"{path}: val_ids repeats a row")
    digest = _digest(ids, labels)
    if digest != stored:
        raise Damaged(f"{path}: its val_ids_sha256 is not the digest of its val_ids and val_labels (altered?)")
    return ValPredictions(ids, labels, logits.argmax(axis=1), digest)


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
    if a.val.rows_digest != b.val.rows_digest:  # recomputed from the rows: equal, the same rows and labels
        raise UsageError(f"v{a.version} and v{b.version} validated on different rows (the digests of their "
                         "validation ids and labels differ): train_data, max_train_samples, val_fraction or seed "
                         "changed, so no paired test")
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
