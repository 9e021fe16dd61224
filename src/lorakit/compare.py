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

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorakit.agreement import Agreement, agreement_of, agreement_show, read_confidence
from lorakit.common import ledger_of, overrides_of, version_parse
from lorakit.console import JSON, Output, command, flag, project_of, table
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
        return None if self.run is None else read_confidence(self.run.folder / "probabilities.csv")

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
                "test": None if self.test is None else self.test.as_json(), "test_reason": self.test_reason or None}


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
    return Comparison(a, b, what_diff, where_diff, config_reason, paired, paired_reason, test, test_reason)


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
    if c.a.run is not None and c.b.run is not None:
        _runs_compared_show(out, c)
    agreement_show(out, c)
    return 0


def _runs_compared_show(out: Output, c) -> None:
    """The config diff, the metrics diff and the paired test of two versions."""
    a, b = c.a.name, c.b.name
    for side in (c.a, c.b):
        if side.reason:
            out.result(f"{side.name} is not comparable: {side.reason}")
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
