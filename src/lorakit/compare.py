"""`lorakit compare A B [C ...]`: two versions side by side, or two submission files; several versions at once;
two seed groups.

For two pulled versions: how their configs differ (key: A -> B), their metrics (validation accuracy with its
95% interval, per-class validation recall, train minutes, trainable parameters, device), the exact McNemar
test on their shared validation slice, and how their test predictions agree. A side given as a submission
CSV path (a teammate's file, a public notebook's output) has only test predictions: the comparison is then
the test-set agreement alone.

A pulled folder is untrusted input (runs.pulled_run_load): what it lacks makes that version "not comparable"
with the reason, and the rest still prints. So do validation slices that differ: the paired test is refused
with the why (JSON "paired": null and "paired_reason") and the command still exits 0, since the other parts
are worth reading and the refusal is part of the answer. What cannot be compared at all (an unknown or
unpulled version, a version whose run failed without results, a missing or malformed CSV of a path side, the
same version twice) is an error. Where the paired test cannot tell two versions apart, it says so, and roughly
how many validation rows would.

Three or more versions: the config keys that differ among them, their metrics, and the exact McNemar test of
every pair, Holm-corrected over the pairs (lorakit.stats), one verdict line each. ``--seeds A B``: each version
stands for its seed group (the versions that differ from it only in seed, lorakit.seeds); members of the same
seed are paired (each seed has its own validation rows) and their discordant rows summed into one exact test.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorakit.agreement import Agreement, agreement_of, agreement_show, confidence_of
from lorakit.common import failure_text, ledger_of, overrides_of, version_parse
from lorakit.console import JSON, Output, command, flag, plural, project_of, table, value_text, warn
from lorakit.errors import ArgumentError, NotFound, UsageError
from lorakit.kernel import config_resolved, config_where_keys
from lorakit.notes import notes_text
from lorakit.project import Project
from lorakit.runs import (
    Paired, PulledRun, config_diff, noise_words, paired_test, pulled_run_load, run_numbers,
)
from lorakit.seeds import figures_text, group_figures, seed_group_of
from lorakit.stats import holm, mcnemar_exact, rows_to_tell_paired, verdict
from lorakit.versions import versions_list

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
    row: dict = field(default_factory=dict)  # its ledger row ({} for a CSV path): notes, tags, status
    failure: str = ""  # "v3 ended ERROR (its failure message)" for a version whose run failed

    @property
    def version(self) -> Optional[int]:
        return None if self.run is None else self.run.version

    @property
    def reason(self) -> str:
        """Why this side cannot be paired on validation ("" when it can)."""
        if self.run is None:
            return f"{self.name} is a submission file: it holds test predictions only"
        return f"{self.failure}: {self.run.reason}" if self.failure and self.run.reason else self.run.reason

    @property
    def probabilities(self) -> Path:
        """Where its probabilities.csv would be: beside its submission (agreement_of checks it is its own)."""
        return self.submission.parent / "probabilities.csv"

    @property
    def notes(self) -> str:
        return notes_text(self.row)

    def confidence(self, labels: dict) -> Optional[dict]:
        """ID -> top probability from its probabilities.csv: a pulled run's own; beside a CSV path, the one
        there when its top classes are that file's labels (submissions/v3/submission.csv finds its own)."""
        return confidence_of(self.probabilities, None if self.run is not None else labels)

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
    row = ledger_of(project).row(version) or {}
    failure = failure_text(row)
    if failure and run.metrics is None:  # nothing to compare: say why, never "run pull" or "metrics.json missing"
        raise UsageError(f"{failure}: it has no results to compare (its log: lorakit logs {version})")
    if not run.pulled:
        known = versions_known(project)
        if version not in known:
            listed = ", ".join(f"v{v}" for v in known) if known else "none yet (lorakit push makes one)"
            raise NotFound(f"v{version} is not a version of {project.kernel}: the ledger and the pulled "
                             f"folders know {listed}")
        raise NotFound(run.reason)
    config, why = _config_of(project, run)
    return Side(f"v{version}", run.folder / "submission.csv", run, config, why, row, failure)


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

    @property
    def noise(self) -> str:
        return "" if self.paired is None else noise_words(self.a.name, self.b.name, self.paired)

    def as_json(self) -> dict:
        sides = {key: side_json(side) for key, side in (("a", self.a), ("b", self.b))}
        paired = None if self.paired is None else paired_json(self.paired, self.verdict, self.noise)
        return {**sides,
                **{key: None if diff is None else {k: list(v) for k, v in diff.items()}
                   for key, diff in (("config_diff", self.config_diff), ("where_diff", self.where_diff))},
                "config_reason": self.config_reason or None, "paired": paired,
                "paired_reason": self.paired_reason or None,
                "test": None if self.test is None else self.test.as_json(), "test_reason": self.test_reason or None,
                "environment_warnings": list(self.warnings)}


def side_json(side: Side) -> dict:
    return {"name": side.name, "version": side.version, "submission": str(side.submission),
            "comparable": not side.reason, "reason": side.reason or None, "note": side.row.get("note") or None,
            "tags": [t for t in (side.row.get("tags") or "").split(",") if t], "failure": side.failure or None,
            **side.metrics()}


def paired_json(paired: Paired, words: str, noise: str) -> dict:
    return {**dataclasses.asdict(paired), "verdict": words, "noise": noise or None,
            "rows_needed": None if not noise else rows_to_tell_paired(paired.a_wins, paired.b_wins, paired.rows)}


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


# ------------------------------------------------------------------------------------------ several
@dataclass(frozen=True)
class Pair:
    """Two of several versions and their paired test (None with the reason when there is none)."""

    a: str
    b: str
    paired: Optional[Paired]
    reason: str = ""
    p_holm: Optional[float] = None  # Holm-adjusted over the pairs tested

    @property
    def verdict(self) -> str:
        p = self.paired
        if p is None:
            return f"not paired: {self.reason}"
        return verdict(self.a, self.b, p.a_wins, p.b_wins, p.p_value, self.p_holm)

    @property
    def noise(self) -> str:
        return "" if self.paired is None else noise_words(self.a, self.b, self.paired, self.p_holm)

    def as_json(self) -> dict:
        data = None if self.paired is None else paired_json(self.paired, self.verdict, self.noise)
        return {"a": self.a, "b": self.b, "paired": data, "p_holm": self.p_holm, "reason": self.reason or None}


@dataclass(frozen=True)
class Several:
    """Three or more versions: what differs in their configs, their metrics, every pair's test."""

    sides: tuple  # of Side
    config_table: dict  # key -> [value of each side], for the keys whose values differ
    pairs: tuple  # of Pair

    def as_json(self) -> dict:
        return {"versions": [side_json(s) for s in self.sides],
                "config_diff": {k: dict(zip([s.name for s in self.sides], v)) for k, v in self.config_table.items()},
                "pairs": [p.as_json() for p in self.pairs]}


def compare_several(project: Project, arguments: list) -> Several:
    """Three or more versions compared pairwise: exact McNemar on each pair's shared rows, Holm over the pairs."""
    if not all(is_version(a) for a in arguments):
        raise ArgumentError("compare takes submission CSV paths two at a time: give versions (N or vN) to compare "
                            "more than two")
    sides = [side_of(project, a) for a in arguments]
    names = [s.name for s in sides]
    if len(set(names)) < len(names):
        raise ArgumentError(f"compare needs different versions: {', '.join(arguments)} name one twice")
    where = set(config_where_keys(project))
    known = [s.config for s in sides if s.config is not None]
    keys = sorted({k for c in known for k in c if k not in where and any(o.get(k) != c.get(k) for o in known)})
    table_ = {k: [None if s.config is None else s.config.get(k) for s in sides] for k in keys}
    pairs = []
    for i, a in enumerate(sides):
        for b in sides[i + 1:]:
            diff = config_diff(a.config, b.config) if a.config is not None and b.config is not None else None
            paired, why = _paired_or_reason(a, b, diff)
            pairs.append(Pair(a.name, b.name, paired, why))
    tested = [k for k, p in enumerate(pairs) if p.paired is not None]
    for k, adjusted in zip(tested, holm([pairs[k].paired.p_value for k in tested])):
        pairs[k] = dataclasses.replace(pairs[k], p_holm=adjusted)
    return Several(tuple(sides), table_, tuple(pairs))


# ------------------------------------------------------------------------------------------ seed groups
@dataclass(frozen=True)
class GroupComparison:
    """Two seed groups, their members paired seed by seed, the discordant rows summed into one exact test."""

    a: tuple  # the versions of group A, oldest first
    b: tuple
    changes: dict  # key -> (A, B): how the groups' configs differ, the seed aside
    seeds: tuple  # (seed, version of A, version of B, Paired or None, why not)
    unpaired: tuple  # (group name, version, seed) of the members whose seed the other group lacks
    figures: tuple  # (A, B) mean, spread, n of validation accuracy (seeds.figures_text)
    combined: Optional[Paired]

    @property
    def names(self) -> tuple:
        return tuple("+".join(f"v{v}" for v in group) for group in (self.a, self.b))

    @property
    def verdict(self) -> Optional[str]:
        p = self.combined
        return None if p is None else verdict(*self.names, p.a_wins, p.b_wins, p.p_value)

    def as_json(self) -> dict:
        combined = None if self.combined is None else paired_json(
            self.combined, self.verdict, noise_words(*self.names, self.combined))
        return {"a": list(self.a), "b": list(self.b), "config_diff": {k: list(v) for k, v in self.changes.items()},
                "seeds": [{"seed": seed, "a": va, "b": vb, "paired": None if p is None else dataclasses.asdict(p),
                           "reason": why or None} for seed, va, vb, p, why in self.seeds],
                "unpaired": [{"group": g, "version": v, "seed": seed} for g, v, seed in self.unpaired],
                "val_accuracy": [dict(zip(("mean", "spread", "n"), f)) for f in self.figures],
                "combined": combined}


def compare_groups(project: Project, first: str, second: str) -> GroupComparison:
    """The seed groups of ``first`` and ``second`` (lorakit.seeds), paired seed by seed."""
    if not (is_version(first) and is_version(second)):
        raise ArgumentError("--seeds compares the seed groups of two versions (N or vN), not CSV paths")
    rows = versions_list(project)
    groups = [seed_group_of(rows, version_parse(a)) for a in (first, second)]
    for argument, group in zip((first, second), groups):
        if not group:
            side_of(project, argument)  # names the versions that exist
    if groups[0][0].version in {r.version for r in groups[1]}:
        group = "+".join(f"v{r.version}" for r in groups[0])
        raise ArgumentError(f"{first} and {second} are in one seed group ({group}): --seeds compares two groups")
    by_seed = [{r.config.get("seed") if r.config else None: r for r in g} for g in groups]
    seeds = [_seed_paired(project, seed, by_seed[0][seed].version, by_seed[1][seed].version)
             for seed in by_seed[0] if seed in by_seed[1]]
    unpaired = tuple((name, r.version, seed) for name, mine, other in (("A", by_seed[0], by_seed[1]),
                                                                        ("B", by_seed[1], by_seed[0]))
                     for seed, r in mine.items() if seed not in other)
    tested = [p for _s, _a, _b, p, _w in seeds if p is not None]
    combined = None if not tested else _summed(tested)
    ca, cb = (g[0].config or {} for g in groups)
    changes = {k: v for k, v in config_diff(ca, cb).items() if k != "seed"}
    return GroupComparison(tuple(r.version for r in groups[0]), tuple(r.version for r in groups[1]), changes,
                           tuple(seeds), unpaired, tuple(group_figures(g) for g in groups), combined)


def _seed_paired(project: Project, seed, va: int, vb: int) -> tuple:
    """(seed, va, vb, their Paired or None, why not) for two members of one seed."""
    a, b = (pulled_run_load(project, v, project.kernel) for v in (va, vb))
    try:
        return seed, va, vb, paired_test(a, b), ""
    except UsageError as exc:
        return seed, va, vb, None, str(exc)


def _summed(tested: list) -> Paired:
    a, b, rows = (sum(getattr(p, k) for p in tested) for k in ("a_wins", "b_wins", "rows"))
    return Paired(rows, a, b, mcnemar_exact(a, b))


# ------------------------------------------------------------------------------------- the command line
@command(
    "compare",
    "versions side by side: config diff, metrics diff, exact McNemar test on their shared validation rows "
    "(skipped with the reason, exit 0, when the slices differ) and test-set agreement; three or more: every pair, "
    "Holm-corrected; --seeds: two seed groups; for submission CSV paths, the agreement only",
    flag("sides", nargs="+", metavar="A B", help="two or more versions (N or vN), or two submission CSV paths "
                                                 "(ID,Label)"),
    flag("--seeds", action="store_true",
         help="each of the two versions stands for its seed group (the versions that differ from it only in seed): "
              "members of the same seed are paired and their discordant rows summed into one exact test"),
    JSON,
)
def cmd_compare(args) -> int:
    out = args.out
    if len(args.sides) < 2:
        raise ArgumentError("compare needs two versions or files (or more versions), e.g. lorakit compare 3 5")
    if args.seeds and len(args.sides) != 2:
        raise ArgumentError("--seeds compares two seed groups: give one version of each")
    project = project_of(args) if any(is_version(a) for a in args.sides) else None  # two files need no checkout
    if args.seeds:
        g = compare_groups(project, *args.sides)
        out.document(g.as_json())
        _groups_show(out, g)
    elif len(args.sides) > 2:
        several = compare_several(project, args.sides)
        out.document(several.as_json())
        _several_show(out, several)
    else:
        c = compare(project, *args.sides)
        out.document(c.as_json())
        for line in c.warnings:
            warn(line)
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
        elif side.run.damage:  # fields of its metrics.json read as unknown
            out.result(f"{side.name}: {side.run.damage}")
        elif side.failure:
            out.result(f"note: {side.failure}, but it left results to compare")
    if c.config_diff is None:
        out.result(f"config: {c.config_reason}")
    else:
        out.result(f"config {a} -> {b}:" + ("" if c.config_diff else " the same"))
        for key, (before, after) in c.config_diff.items():
            out.result(f"  {key}: {'unset' if before is None else before} -> {'unset' if after is None else after}")
        for key, (before, after) in c.where_diff.items():
            out.result(f"  {key} (where, not what: not in config_hash): {before} -> {after}")
    rows = _metrics_rows(c.a.metrics(), c.b.metrics())
    if c.a.notes or c.b.notes:
        rows.append(["notes", c.a.notes or "-", c.b.notes or "-", ""])
    out.result(table(["metric", a, b, f"{b} - {a}"], rows))
    p = c.paired
    if p is None:
        out.result(f"paired test: none: {c.paired_reason}")
        return
    out.result(f"paired test on the {p.rows} shared validation rows (exact McNemar): {a} right and {b} wrong "
               f"{p.a_wins}, {b} right and {a} wrong {p.b_wins}, p_value {p.p_value:.3g}")
    out.result(f"verdict: {c.verdict}")
    if c.noise:
        out.result(f"noise: {c.noise}")


def _several_show(out: Output, several: Several) -> None:
    """The config keys that differ, the metrics side by side, then one verdict line per pair."""
    names = [s.name for s in several.sides]
    for side in several.sides:
        if side.reason:
            out.result(f"{side.name} is not comparable: {side.reason}")
    if several.config_table:
        out.result("config (the keys that differ):")
        out.result(table(["key", *names], [[k, *("-" if v is None else value_text(v) for v in values)]
                                           for k, values in several.config_table.items()]))
    else:
        out.result("config: the same")
    metrics = [s.metrics() for s in several.sides]
    rows = [["val accuracy", *(_accuracy_text(m) for m in metrics)],
            ["val rows", *("-" if m["val_rows"] is None else f"{m['val_rows']:,}" for m in metrics)],
            ["train minutes", *("-" if m["train_minutes"] is None else f"{m['train_minutes']:.1f}" for m in metrics)],
            ["trainable params", *("-" if m["trainable_params"] is None else f"{m['trainable_params']:,}"
                                   for m in metrics)]]
    if any(s.notes for s in several.sides):
        rows.append(["notes", *(s.notes or "-" for s in several.sides)])
    out.result(table(["metric", *names], rows))
    tested = sum(p.paired is not None for p in several.pairs)
    out.result(f"paired tests (exact McNemar on each pair's shared validation rows; Holm over the "
               f"{plural(tested, 'pair')} tested):")
    for pair in several.pairs:
        out.result(f"  {pair.a} vs {pair.b}: {pair.verdict}")
    for pair in several.pairs:
        if pair.noise:
            out.result(f"noise: {pair.noise}")


def _accuracy_text(m: dict) -> str:
    if m["val_accuracy"] is None:
        return "-"
    interval = m["val_interval"]
    return f"{m['val_accuracy']:.4f}" + ("" if interval is None else " [{:.4f}, {:.4f}]".format(*interval))


def _groups_show(out: Output, g: GroupComparison) -> None:
    """The two groups, each seed's pair, the combined test and what it tells."""
    a, b = g.names
    out.result(f"seed groups: A = {a}, B = {b}")
    if g.changes:
        out.result("config A -> B (the seed aside): " + ", ".join(f"{k} {value_text(x)} -> {value_text(y)}"
                                                                  for k, (x, y) in g.changes.items()))
    out.result(f"val accuracy: A {figures_text(g.figures[0])}, B {figures_text(g.figures[1])} (mean ± standard "
               "deviation over the seeds)")
    rows = [[seed, f"v{va}", f"v{vb}", *((p.a_wins, p.b_wins, p.rows, f"{p.p_value:.2g}") if p else ("-",) * 4),
             why or ""] for seed, va, vb, p, why in g.seeds]
    out.result(table(["seed", "A", "B", "A wins", "B wins", "rows", "p", "why not paired"], rows))
    for group, version, seed in g.unpaired:
        out.result(f"unpaired: v{version} of {group} (seed {seed}): the other group has no run of that seed")
    p = g.combined
    if p is None:
        out.result("combined: no seed could be paired")
        return
    out.result(f"combined over {plural(sum(1 for s in g.seeds if s[3] is not None), 'seed')}, {p.rows:,} paired rows "
               f"(exact McNemar on the summed discordant rows): A right and B wrong {p.a_wins}, B right and A wrong "
               f"{p.b_wins}, p_value {p.p_value:.3g}")
    out.result(f"verdict: {g.verdict}")
    noise = noise_words(a, b, p)
    if noise:
        out.result(f"noise: {noise}")


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
