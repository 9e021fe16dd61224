"""`lorakit compare A B`: two versions side by side, or two submission files.

For two pulled versions: how their configs differ (key: A -> B), their metrics (validation accuracy with its
95% interval, per-class validation recall, train minutes, trainable parameters, device), the exact McNemar
test on their shared validation slice, and how their test predictions agree. A side given as a submission
CSV path (a teammate's file, a public notebook's output) has only test predictions: the comparison is then
the test-set agreement alone.

A pulled folder is untrusted input (runs.pulled_run_load): what it lacks makes that version "not comparable"
with the reason, and the rest still prints. So do validation slices that differ: the paired test is refused
with the why (JSON "paired": null and "paired_reason") and the command still exits 0, since the other parts
are worth reading and the refusal is part of the answer. What cannot be compared at all (an unknown or
unpulled version, a missing or malformed CSV of a path side, the same version twice) is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorakit.common import LABELS, ledger_of, overrides_of, version_parse
from lorakit.console import JSON, Output, command, flag, project_of, table, warn
from lorakit.errors import ArgumentError, NotFound, UsageError
from lorakit.kernel import config_resolved, config_where_keys
from lorakit.project import Project
from lorakit.runs import (
    Paired, PulledRun, config_diff, paired_test, pulled_run_load, run_numbers,
)
from lorakit.stats import verdict

VERSION_ARGUMENT = re.compile(r"^[vV]?\d+$")  # anything else is a submission CSV path
SLICE_KEYS = ("train_data", "max_train_samples", "val_fraction", "seed")  # what picks the validation rows


def is_version(argument: str) -> bool:
    """Whether ``argument`` names a version (N or vN) rather than a submission CSV path."""
    return bool(VERSION_ARGUMENT.match(str(argument).strip()))


# ----------------------------------------------------------------------------------------- test set
def _read_labels(path: Path) -> dict:
    """ID -> label of a submission CSV (ID,Label, labels 0-3, each ID once); UsageError naming the line."""
    if not path.is_file():
        raise NotFound(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    out: dict = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's BOM is fine
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "ID" not in reader.fieldnames or "Label" not in reader.fieldnames:
                raise UsageError(f"{path} must have the columns ID,Label")
            for row in reader:
                line = reader.line_num
                try:
                    key, label = int(row["ID"]), int(row["Label"])
                except (TypeError, ValueError):
                    raise UsageError(f"{path}: line {line} is not integer ID,Label")
                if not 0 <= label < len(LABELS):
                    raise UsageError(f"{path}: line {line} has Label {label}; labels are 0-{len(LABELS) - 1}")
                if key in out:
                    raise UsageError(f"{path}: line {line} repeats ID {key}")
                out[key] = label
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable CSV ({type(exc).__name__})")
    if not out:
        raise UsageError(f"{path} has no rows")
    return out


def _read_confidence(path: Path) -> Optional[dict]:
    """ID -> top class probability of a probabilities.csv; None when absent or not readable as one."""
    if not path.is_file():
        return None
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            cols = [c for c in (reader.fieldnames or []) if c != "ID"]
            if "ID" not in (reader.fieldnames or []) or not cols:
                return None
            for row in reader:
                out[int(row["ID"])] = max(float(row[c]) for c in cols)
    except (TypeError, ValueError, UnicodeDecodeError, csv.Error):
        return None
    return out


@dataclass(frozen=True)
class Agreement:
    """How two submissions' test predictions agree."""

    rows: int
    agreement: float
    per_class: dict  # label -> (rows A predicts it, agreement of B on them, rows B predicts it, agreement of A)
    distribution_a: dict
    distribution_b: dict
    disagreements: int
    confidence_a: Optional[float]  # mean top probability on the disagreements (probabilities.csv)
    confidence_b: Optional[float]

    def as_json(self) -> dict:
        per_class = {
            name: {"a_rows": na, "b_agrees": agree_b, "b_rows": nb, "a_agrees": agree_a}
            for name, (na, agree_b, nb, agree_a) in self.per_class.items()
        }
        return {**dataclasses.asdict(self), "per_class": per_class}


def agreement_of(a: "Side", b: "Side") -> Agreement:
    """The test-set agreement of two sides' submissions; UsageError when a file is unusable or the IDs differ."""
    la, lb = _read_labels(a.submission), _read_labels(b.submission)
    if set(la) != set(lb):
        raise UsageError(f"{a.name} and {b.name} cover different IDs ({len(la)} and {len(lb)} rows)")
    ids = sorted(la)
    agree = sum(la[i] == lb[i] for i in ids)
    per_class = {}
    for k, name in enumerate(LABELS):
        rows_a = [i for i in ids if la[i] == k]
        rows_b = [i for i in ids if lb[i] == k]
        per_class[name] = (
            len(rows_a),
            sum(lb[i] == k for i in rows_a) / len(rows_a) if rows_a else None,
            len(rows_b),
            sum(la[i] == k for i in rows_b) / len(rows_b) if rows_b else None,
        )
    dist_a = {name: sum(1 for i in ids if la[i] == k) for k, name in enumerate(LABELS)}
    dist_b = {name: sum(1 for i in ids if lb[i] == k) for k, name in enumerate(LABELS)}
    differ = [i for i in ids if la[i] != lb[i]]
    ca, cb = a.confidence(), b.confidence()
    conf_a = conf_b = None
    if ca is not None and cb is not None and differ:
        conf_a = sum(ca.get(i, 0.0) for i in differ) / len(differ)
        conf_b = sum(cb.get(i, 0.0) for i in differ) / len(differ)
    return Agreement(len(ids), agree / len(ids), per_class, dist_a, dist_b, len(differ), conf_a, conf_b)


# ------------------------------------------------------------------------------------------ one side
@dataclass(frozen=True)
class Side:
    """One side of a comparison: a pulled version (``run``) or a submission CSV path (``run`` None)."""

    name: str  # "v3", or the path as given
    submission: Path
    run: Optional[PulledRun] = None
    config: Optional[dict] = None  # the run's full config; None when unknown (config_reason says why)
    config_reason: str = ""

    @property
    def version(self) -> Optional[int]:
        return None if self.run is None else self.run.version

    @property
    def reason(self) -> str:
        """Why this side cannot be paired on validation ("" when it can)."""
        if self.run is None:
            return f"{self.name} is a submission file: it holds test predictions only"
        return self.run.reason

    def confidence(self) -> Optional[dict]:
        """The run's probabilities.csv (a bare CSV path has none that is surely its own)."""
        return None if self.run is None else _read_confidence(self.run.folder / "probabilities.csv")

    def metrics(self) -> dict:
        """The numbers of the metrics diff; None where the run does not say (all of them for a CSV path)."""
        return run_numbers(None, None) if self.run is None else self.run.numbers()


def _config_of(project: Project, run: PulledRun) -> tuple[Optional[dict], str]:
    """The run's full config: metrics.json's, else the one the ledger's overrides give (kernel.config_resolved)."""
    config = (run.metrics or {}).get("config")
    if isinstance(config, dict):
        return config, ""
    overrides = overrides_of(ledger_of(project).row(run.version))
    if overrides is not None:
        return config_resolved(project, overrides), ""
    return None, f"v{run.version}'s config is unknown (no config in metrics.json, no overrides in the ledger)"


def versions_known(project: Project) -> list:
    """The versions of the project's kernel that the ledger has a row for or that have a pulled folder."""
    folder = project.version_dir(1).parent
    pulled = {int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit() and p.is_dir()}
    return sorted({int(r["version"]) for r in ledger_of(project).rows()} | pulled)


def side_of(project: Optional[Project], argument: str) -> Side:
    """The side ``argument`` names: a pulled version (N or vN) or a submission CSV path. UsageError for an
    unknown version (naming those that exist), an unpulled one (with the pull command) or a missing file."""
    argument = str(argument).strip()
    if not is_version(argument):
        path = Path(argument)
        if not path.is_file():
            what = "does not exist" if not path.exists() else "is not a file"
            raise NotFound(f"{argument} {what} (A and B are versions, N or vN, or submission CSV paths)")
        return Side(argument, path)
    if project is None:
        raise UsageError(f"{argument} is a version: run lorakit inside the repository")
    version = version_parse(argument)
    run = pulled_run_load(project, version, project.kernel)
    if not run.pulled:
        known = versions_known(project)
        if version not in known:
            listed = ", ".join(f"v{v}" for v in known) if known else "none yet (lorakit push makes one)"
            raise NotFound(f"v{version} is not a version of {project.kernel}: the ledger and the pulled "
                             f"folders know {listed}")
        raise NotFound(run.reason)
    config, why = _config_of(project, run)
    return Side(f"v{version}", run.folder / "submission.csv", run, config, why)


# ------------------------------------------------------------------------------------------ together
@dataclass(frozen=True)
class Comparison:
    """Everything `lorakit compare` reports; each part None with its reason when it cannot be had."""

    a: Side
    b: Side
    config_diff: Optional[dict]  # key -> (A, B), for what ran (the keys config_hash covers)
    where_diff: Optional[dict]  # key -> (A, B), for where it read and wrote (output_dir, ...: not in config_hash)
    config_reason: str
    paired: Optional[Paired]
    paired_reason: str
    test: Optional[Agreement]
    test_reason: str
    warnings: tuple = ()  # where the two versions ran apart: another Docker image, another accelerator

    @property
    def verdict(self) -> Optional[str]:
        p = self.paired
        return None if p is None else verdict(self.a.name, self.b.name, p.a_wins, p.b_wins, p.p_value)

    def as_json(self) -> dict:
        sides = {key: {"name": side.name, "version": side.version, "submission": str(side.submission),
                       "comparable": not side.reason, "reason": side.reason or None, **side.metrics()}
                 for key, side in (("a", self.a), ("b", self.b))}
        paired = None if self.paired is None else {**dataclasses.asdict(self.paired), "verdict": self.verdict}
        return {**sides,
                **{key: None if diff is None else {k: list(v) for k, v in diff.items()}
                   for key, diff in (("config_diff", self.config_diff), ("where_diff", self.where_diff))},
                "config_reason": self.config_reason or None, "paired": paired,
                "paired_reason": self.paired_reason or None,
                "test": None if self.test is None else self.test.as_json(), "test_reason": self.test_reason or None,
                "environment_warnings": list(self.warnings)}


def _paired_or_reason(a: Side, b: Side, diff: Optional[dict]) -> tuple[Optional[Paired], str]:
    """The McNemar test of two versions, or why there is none (naming the slice keys that changed)."""
    if a.run is None or b.run is None:
        return None, (a.reason if a.run is None else b.reason)
    try:
        return paired_test(a.run, b.run), ""
    except UsageError as exc:
        changed = [f"{key} {diff[key][0]} -> {diff[key][1]}" for key in SLICE_KEYS if key in (diff or {})]
        return None, str(exc) + (f" (here: {', '.join(changed)})" if changed else "")


def _config_diff_or_reason(a: Side, b: Side) -> tuple[Optional[dict], str]:
    if a.run is None or b.run is None:
        return None, (a.reason if a.run is None else b.reason)
    if a.config is None or b.config is None:
        return None, a.config_reason or b.config_reason
    return config_diff(a.config, b.config), ""


def compare(project: Optional[Project], first: str, second: str) -> Comparison:
    """Compare A and B (each a version or a submission CSV path); ``project`` may be None for two paths."""
    a, b = side_of(project, first), side_of(project, second)
    if a.submission.resolve() == b.submission.resolve():  # v3 and 3, or one file by two paths
        raise ArgumentError(f"compare needs two different versions or files: {first} and {second} are the same")
    diff, config_reason = _config_diff_or_reason(a, b)
    paired, paired_reason = _paired_or_reason(a, b, diff)
    where = () if project is None else config_where_keys(project)
    what_diff, where_diff = (None, None) if diff is None else (
        {k: v for k, v in diff.items() if k not in where}, {k: v for k, v in diff.items() if k in where})
    try:
        test, test_reason = agreement_of(a, b), ""
    except UsageError as exc:
        if a.run is None or b.run is None:  # a file given by path is the whole point: its faults are errors
            raise
        test, test_reason = None, str(exc)
    return Comparison(a, b, what_diff, where_diff, config_reason, paired, paired_reason, test, test_reason,
                      tuple(environment_warnings(project, a, b)))


def environment_warnings(project: Optional[Project], a: Side, b: Side) -> list:
    """Where two versions ran apart, beyond their configs: another Docker image (the ledger's, recorded when each
    ended as the newest version), another accelerator (the ledger's machine_shape of both, else the device
    their metrics.json names)."""
    if project is None or a.run is None or b.run is None:
        return []
    rows = [ledger_of(project).row(side.version) or {} for side in (a, b)]
    warnings = []
    images = [row.get("docker_image", "") for row in rows]
    if all(images) and images[0] != images[1]:
        warnings.append(f"{a.name} and {b.name} ran on different Docker images ({images[0]} and {images[1]}): "
                        "their library versions may differ as well as their configs")
    shapes = [row.get("machine_shape", "") for row in rows]
    ran_on = shapes if all(shapes) else [side.metrics()["device"] or "" for side in (a, b)]
    if all(ran_on) and ran_on[0] != ran_on[1]:
        warnings.append(f"{a.name} and {b.name} ran on different accelerators ({ran_on[0]} and {ran_on[1]}): "
                        "their timings differ, and their numbers may too")
    return warnings


# ------------------------------------------------------------------------------------- the command line
@command(
    "compare",
    "two versions side by side: config diff, metrics diff, exact McNemar test on their shared validation rows "
    "(skipped with the reason, exit 0, when the slices differ) and test-set agreement; for submission CSV paths, "
    "the agreement only",
    flag("a", metavar="A", help="first version (N or vN), or a submission CSV path (ID,Label)"),
    flag("b", metavar="B", help="second version (N or vN), or a submission CSV path (ID,Label)"),
    JSON,
)
def cmd_compare(args) -> int:
    out = args.out
    project = project_of(args) if is_version(args.a) or is_version(args.b) else None  # two files need no checkout
    c = compare(project, args.a, args.b)
    out.document(c.as_json())
    for line in c.warnings:
        warn(line)
    if c.a.run is not None and c.b.run is not None:
        _runs_compared_show(out, c)
    _agreement_show(out, c)
    return 0


def _runs_compared_show(out: Output, c) -> None:
    """The config diff, the metrics diff and the paired test of two versions."""
    a, b = c.a.name, c.b.name
    for side in (c.a, c.b):
        if side.reason:
            out.result(f"{side.name} is not comparable: {side.reason}")
        elif side.run.damage:  # fields of its metrics.json read as unknown
            out.result(f"{side.name}: {side.run.damage}")
    if c.config_diff is None:
        out.result(f"config: {c.config_reason}")
    else:
        out.result(f"config {a} -> {b}:" + ("" if c.config_diff else " the same"))
        for key, (before, after) in c.config_diff.items():
            out.result(f"  {key}: {'unset' if before is None else before} -> {'unset' if after is None else after}")
        for key, (before, after) in c.where_diff.items():
            out.result(f"  {key} (where, not what: not in config_hash): {before} -> {after}")
    out.result(table(["metric", a, b, f"{b} - {a}"], _metrics_rows(c.a.metrics(), c.b.metrics())))
    p = c.paired
    if p is None:
        out.result(f"paired test: none: {c.paired_reason}")
        return
    out.result(f"paired test on the {p.rows} shared validation rows (exact McNemar): {a} right and {b} wrong "
               f"{p.a_wins}, {b} right and {a} wrong {p.b_wins}, p_value {p.p_value:.3g}")
    out.result(f"verdict: {c.verdict}")


def _metrics_rows(ma: dict, mb: dict) -> list:
    """metric, A, B, B - A; "-" where a run does not say. Accuracy carries its 95% interval."""
    recall_a, recall_b = ma["per_class_recall"] or {}, mb["per_class_recall"] or {}
    figures = [("val accuracy [95%]", ma["val_accuracy"], mb["val_accuracy"], ".4f"),
               ("val rows", ma["val_rows"], mb["val_rows"], ",d"),
               *((f"recall {name}", recall_a.get(name), recall_b.get(name), ".4f") for name in recall_a or recall_b),
               ("train minutes", ma["train_minutes"], mb["train_minutes"], ".1f"),
               ("trainable params", ma["trainable_params"], mb["trainable_params"], ",d")]
    rows = [[label, "-" if x is None else format(x, spec), "-" if y is None else format(y, spec),
             "" if x is None or y is None else format(y - x, "+" + spec)] for label, x, y, spec in figures]
    for column, m in ((1, ma), (2, mb)):
        if m["val_interval"] is not None:
            rows[0][column] += " [{:.4f}, {:.4f}]".format(*m["val_interval"])
    rows.append(["device", ma["device"] or "-", mb["device"] or "-", ""])
    return rows


def _agreement_show(out: Output, c) -> None:
    """How the two sides' test predictions agree (overall, per class, class shares, confidence)."""
    t = c.test
    if t is None:
        out.result(f"test set: not compared: {c.test_reason}")
        return
    a = c.a.name if c.a.run is not None else "A"  # a file's path is too long for the table's headers
    b = c.b.name if c.b.run is not None else "B"
    title_a, title_b = (side.name + ("" if side.name == short else f" ({short})")
                        for side, short in ((c.a, a), (c.b, b)))
    out.result(f"test set: {title_a} vs {title_b}: {t.rows} rows, agreement {t.agreement:.2%} "
               f"({t.disagreements} rows differ)")
    rows = [
        [name, na, "-" if agree_b is None else f"{agree_b:.2%}", nb, "-" if agree_a is None else f"{agree_a:.2%}",
         f"{t.distribution_a[name] / t.rows:.1%}", f"{t.distribution_b[name] / t.rows:.1%}"]
        for name, (na, agree_b, nb, agree_a) in t.per_class.items()
    ]
    out.result(table(["class", f"{a} rows", f"{b} agrees", f"{b} rows", f"{a} agrees", f"{a} share", f"{b} share"],
                      rows))
    if t.confidence_a is not None:
        out.result(f"mean confidence on the {t.disagreements} disagreements: {a} {t.confidence_a:.3f}, "
                   f"{b} {t.confidence_b:.3f}")
    elif t.disagreements:
        out.result("(confidence on the disagreements needs both versions' probabilities.csv)")
