"""The `lorakit` command line: a thin layer over the library modules (push, follow, pull, submit, scores, run, ...).

Results go to stdout, progress and warnings to stderr; with ``--json`` stdout holds exactly one JSON document
(also when the command fails) and every other line goes to stderr. A user error prints one line on stderr
(``lorakit: error: ...``) and exits non-zero, without a traceback.

Each command is a handler with its flags beside it (:func:`command`): adding one touches one place.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import math
import os
import signal
import sys
import threading
from typing import Callable, Optional

from lorakit import __version__
from lorakit.errors import ArgumentError, Interrupted, LorakitError, UsageError

LOOP = """\
typical loop:
  lorakit check --set lora_r=8               offline: exact trainable count and budget verdict
  lorakit run -m "r=8" --set lora_r=8 --submit
                                             push, wait, pull, submit and wait for the score, in one go
or step by step:
  lorakit push -m "r=8" --set lora_r=8       render the kernel with its overrides and push a new version
  lorakit status --wait --follow             wait for the newest version, streaming its log
  lorakit pull                               download its outputs into submissions/v<N>/
  lorakit submit <N> --wait                  validate and submit submissions/v<N>/submission.csv
  lorakit scores                             my submissions and their scores, best candidates marked
then, to choose what to submit:
  lorakit versions                           every version: state, changes, val accuracy [95% CI], scores
  lorakit compare 3 5                        config and metrics diff, paired test on the same validation rows
  lorakit sweep --grid lora_r=4,8 --grid lr=5e-4,1e-3 --submit-best 1
                                             push, wait and pull each arm in turn; ranked, paired against the best

Commands that print data take --json: one JSON document on stdout, messages on stderr, the same exit codes.
Credentials, in the kaggle client's order: KAGGLE_API_TOKEN (a token or a file holding one),
~/.kaggle/access_token, kaggle.json (or KAGGLE_USERNAME + KAGGLE_KEY), then `kaggle auth login`'s cache.
"""


def epilog() -> str:
    """The loop, then the exit codes and environment variables from their one definition each."""
    from lorakit.errors import EXIT_CODES
    from lorakit.retry import ENVIRONMENT

    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    env = "\n".join(f"  {var.name} ({var.default or 'unset'}): {var.meaning}" for var in ENVIRONMENT)
    return f"{LOOP}\nexit status:\n{codes}\n\nenvironment:\n{env}\n"


class Output:
    """Where a command writes: its result as text on stdout; with --json one JSON document on stdout instead,
    and every progress line on stderr. ``partial`` collects what a command has done so far: a command that
    fails under --json still prints one document, that and the error."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.documented = False
        self.partial: dict = {}

    def result(self, text: str = "") -> None:
        """Part of the result: stdout, or nothing under --json (the document holds it)."""
        if not self.as_json:
            print(text, file=sys.stdout)

    def progress(self, text: str, end: str = "\n") -> None:
        """Progress and hints: stdout, or stderr under --json; flushed, so a follower sees it at once."""
        print(text, end=end, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def document(self, data: dict) -> None:
        if self.as_json and not self.documented:
            print(json.dumps(data, sort_keys=True), file=sys.stdout)
            self.documented = True

    def failure(self, message: str, exit_code: int) -> None:
        self.document({**self.partial, "error": message, "exit_code": exit_code})


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _warn(text: str) -> None:
    _err(f"lorakit: warning: {text}")


def _note(text: str) -> None:
    _err(f"lorakit: note: {text}")


def _table(headers: list, rows: list) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _project(args):
    from lorakit.project import project_load

    return project_load(args.repo, kernel=args.kernel, competition=args.competition)


def _remote():
    from lorakit.remote import Remote

    return Remote()


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _one_format(args) -> None:
    if args.csv and args.json:
        raise ArgumentError("choose one of --csv and --json")


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be a positive number of seconds")


# ------------------------------------------------------------------------------------------ registration
COMMANDS: list = []  # (name, help, flags, handler), in the order `lorakit --help` lists them


def flag(*names, **options) -> tuple:
    """One argparse argument: ``flag("--top", type=int, help=...)``."""
    return names, options


def command(name: str, help_text: str, *flags: tuple):
    """Register ``cmd_x`` as the command ``name`` with its flags (each from :func:`flag`)."""

    def register(handler: Callable) -> Callable:
        COMMANDS.append((name, help_text, flags, handler))
        return handler

    return register


CSV = flag("--csv", action="store_true", help="print CSV (pandas.read_csv reads it) instead of a table")
JSON = flag("--json", action="store_true", help="print one JSON document on stdout; messages go to stderr")
SETS = flag("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
            help="override one config key of the kernel (repeatable; booleans are true/false)")
PUSH_FLAGS = (
    flag("-m", "--message", required=True, help="what this version tries (kept in the ledger)"),
    SETS,
    flag("--accelerator", metavar="SHAPE", help="machine shape, e.g. NvidiaTeslaT4 (overrides the metadata)"),
    flag("--no-run", action="store_true", help="save the version without running it (quick save; push only)"),
    flag("--predict-from", metavar="N", type=int,
         help="predict only, with version N's pulled adapter (submissions/vN/adapter, uploaded as a private "
              "dataset and pinned by its sha256)"),
    flag("--build-dir", metavar="DIR",
         help="render the build folder here and keep it (default: a temporary folder, removed after the push)"),
    flag("--dry-run", action="store_true",
         help="check and render the build folder, push nothing (the folder is kept only with --build-dir)"),
    flag("--again", action="store_true",
         help="push even when a COMPLETE version of this kernel already ran the same config_hash"),
)
ALLOW_SMOKE = flag("--allow-smoke", action="store_true",
                   help="submit even a run that did not predict the competition's own file (a smoke run, another "
                        "test file): for exercising the loop against a stand-in")


def _push_options(args):
    from lorakit.push import PushOptions

    return PushOptions(args.message, tuple(args.sets), args.accelerator, args.no_run, args.predict_from,
                       args.build_dir, args.dry_run, args.again)


def _on_poll(emit: Callable[[str], None], changes_only: bool = False):
    """``emit`` the status line of each poll (of each change only, for a log follower)."""
    seen = []

    def on_poll(version, status, elapsed):
        if not changes_only or seen[-1:] != [status.status]:
            emit(f"[{_elapsed(elapsed)}] v{version} {status.shown}")
        seen.append(status.status)

    return on_poll


# ---------------------------------------------------------------------------------------------- commands
@command("check", "offline preflight: exact trainable count, budget verdict, metadata and script checks", SETS, JSON)
def cmd_check(args) -> int:
    from lorakit.check import config_check

    out = args.out
    project = _project(args)
    report = config_check(project, args.sets)
    e = report.effective
    for warning in report.warnings:
        _warn(warning)
    out.document(report.as_json())
    out.result(f"script     {project.script_path.relative_to(project.root)} (compiles)")
    out.result(f"metadata   {project.metadata_path.name}: {project.kernel}, competition {project.competition} (valid)")
    out.result(f"overrides  {json.dumps(e.overrides, sort_keys=True)}")
    out.result(e.breakdown_text())
    out.result(f"config_hash {e.config_hash}")
    out.result(f"lengths    {report.lengths_text()}")
    out.result(f"verdict    {'within' if e.within_budget else 'OVER'} budget: {e.trainable_params:,} of "
               f"{e.budget:,} trainable parameters")
    if not e.within_budget:
        _err(f"lorakit: error: {e.trainable_params:,} trainable parameters exceed param_budget {e.budget:,}")
        return 1
    return 0


def _push_show(out: Output, project, result, hints: bool) -> None:
    e = result.effective
    out.progress(f"check: {e.trainable_params:,} trainable parameters (within budget {e.budget:,}), "
                 f"config_hash {e.config_hash[:12]}")
    if result.adapter is not None:
        a = result.adapter
        upload = f" ({a.upload})" if a.upload else ""
        out.progress(f"predict from v{a.version}: adapter sha256 {a.sha256[:12]} in dataset {a.dataset}{upload}")
    for note in result.notes:
        _note(note)
    if result.version is None:
        kept = f"build folder {result.build_dir}" if result.build_dir else "rendered and checked (--build-dir keeps it)"
        out.progress(f"dry run: {kept} (nothing pushed)")
        return
    if result.build_dir is not None:
        out.progress(f"build folder {result.build_dir}")
    verb = "saved (not run)" if result.status == "NEW_SCRIPT" else "pushed"
    out.progress(f"{verb} v{result.version} of {result.kernel}: {result.url}")
    out.progress(f"ledger: {project.ledger_path.relative_to(project.root)} row v{result.version}")
    if hints:
        out.progress(f"next: lorakit status {result.version} --wait")


@command("push", "check, render the kernel with its overrides, push a new version and record it", *PUSH_FLAGS,
         JSON)
def cmd_push(args) -> int:
    from lorakit.push import kernel_push

    project = _project(args)
    options = _push_options(args)
    result = kernel_push(project, None if options.dry_run else _remote(), options, _warn)
    _push_show(args.out, project, result, hints=not options.no_run)
    args.out.document(result.as_json())
    return 0


def _status_wait(args, project, remote, version, timeout: float, follow: bool):
    """Wait for v<N>'s run to end (streaming its log with ``follow``); (version, status) once it has."""
    from lorakit.follow import kernel_status_wait

    out = args.out
    return kernel_status_wait(project, remote, version, timeout, _on_poll(out.progress), _log_shown(out, follow))


def _log_shown(out: Output, follow: bool) -> Optional[Callable[[str], None]]:
    """With ``follow``, where a followed log goes: stdout (stderr under --json), as it comes."""
    return (lambda text: out.progress(text, end="")) if follow else None


@command(
    "status",
    "the status of a version (default: the newest in the ledger)",
    flag("version", nargs="?", help="kernel version number"),
    flag("--wait", action="store_true", help="poll with backoff until the run finishes"),
    flag("--follow", action="store_true", help="wait, streaming the run's log while it runs (implies --wait)"),
    flag("--timeout", type=float, default=3600.0, metavar="S", help="give up waiting after S seconds (default 3600)"),
    JSON,
)
def cmd_status(args) -> int:
    from lorakit.follow import kernel_failure_raise, kernel_status_get

    out = args.out
    project = _project(args)
    if args.wait or args.follow:  # kernel_status_wait checks --timeout before any call
        version, status = _status_wait(args, project, _remote(), args.version, args.timeout, args.follow)
    else:
        version, status = kernel_status_get(project, _remote(), args.version)
        out.result(f"v{version} {status.shown}")
    out.partial = {"version": version, **status.as_json()}
    if status.failure_message:
        out.result(f"failure message: {status.failure_message}")
    kernel_failure_raise(version, status)
    out.document(out.partial)
    if status.status == "COMPLETE":
        out.progress(f"next: lorakit pull {version}")
    return 0


@command(
    "logs",
    "the run's log as text (default: the newest version); --follow streams it while the run goes on",
    flag("version", nargs="?", help="kernel version number"),
    flag("--follow", action="store_true",
         help="stream the log until the run ends (exit 3 when it ends in ERROR); status changes go to stderr"),
    JSON,
)
def cmd_logs(args) -> int:
    from lorakit.follow import kernel_failure_raise, kernel_log_get, kernel_status_wait

    out = args.out
    project = _project(args)
    if not args.follow:
        version, text = kernel_log_get(project, _remote(), args.version)
        out.document({"version": version, "log": text})
        if not out.as_json:
            sys.stdout.write(text)
        return 0
    pieces: list = []

    def on_log(text: str) -> None:  # the log alone on stdout (stderr under --json), status changes on stderr
        pieces.append(text)
        out.progress(text, end="")

    version, status = kernel_status_wait(
        project, _remote(), args.version, math.inf, _on_poll(lambda text: _err(f"lorakit: {text}"), changes_only=True),
        on_log,
    )
    out.partial = {"version": version, **status.as_json(), "log": "".join(pieces)}
    kernel_failure_raise(version, status)
    out.document(out.partial)
    return 0


def _pull_show(out: Output, project, result) -> None:
    from lorakit.common import run_minutes_of

    for warning in result.warnings:
        _warn(warning)
    out.progress(f"pulled v{result.version} into {result.folder.relative_to(project.root)}/ ({len(result.files)} files)")
    for name in result.files:
        out.progress(f"  {name}")
    m = result.metrics
    if m:
        out.progress(
            f"val_accuracy {_fmt(m.get('val_accuracy'))} | trainable {int(m.get('trainable_params') or 0):,} | "
            f"run {_fmt(run_minutes_of(m), 1)} min | config_hash {str(m.get('config_hash') or '')[:12]} | "
            f"device {m.get('device') or '-'}"
        )
        dist = m.get("test_label_distribution")
        if isinstance(dist, dict):
            out.progress("test labels  " + "  ".join(f"{k} {v}" for k, v in dist.items()))


def _pull_next(project, result) -> Optional[str]:
    """The step after a pull: submit a valid submission of a real run; predict again from the adapter of a run
    that failed after saving it; nothing for a smoke run's or another test file's predictions."""
    from lorakit.common import predicted_on_of

    if result.submittable:
        kind, _ = predicted_on_of(result.metrics or {}, {})
        return f"next: lorakit submit {result.version} --wait" if kind in ("competition", None) else None
    if result.has_adapter:
        return f"next: lorakit push --predict-from {result.version} -m MESSAGE"
    return None


@command(
    "pull",
    "download a version's outputs into submissions/v<N>/ and fill its ledger row",
    flag("version", nargs="?", help="kernel version number (default: the newest in the ledger)"),
    JSON,
)
def cmd_pull(args) -> int:
    from lorakit.pull import kernel_output_pull

    project = _project(args)
    result = kernel_output_pull(project, _remote(), args.version, on_wait=lambda m: _err(f"lorakit: {m}"))
    _pull_show(args.out, project, result)
    step_next = _pull_next(project, result)
    if step_next:
        args.out.progress(step_next)
    args.out.document(result.as_json())
    return 0


def _submitted_show(out: Output, result) -> dict:
    """Show a submission just made; what it did, as JSON (also the partial document, should the wait fail)."""
    for note in result.notes:
        _note(note)
    left = "left today unknown" if result.remaining is None else f"{result.remaining} left today"
    out.progress(f"submitted v{result.version} as submission {result.ref} ({left})")
    data = {**result.as_json(), "score": None}
    out.partial["submission"] = data
    return data


def _score_poll(out: Output):
    """The line of each poll of a submission's score."""

    def on_poll(sub, elapsed):
        out.progress(f"[{_elapsed(elapsed)}] submission {sub.ref} {sub.status}")

    return on_poll


def _scored_show(out: Output, data: dict, scored) -> None:
    out.progress(f"scored: public {_fmt(scored.public_score, 5)} | private {_fmt(scored.private_score, 5)}")
    data["score"] = scored.as_json()


@command(
    "submit",
    "validate and submit submissions/v<N>/submission.csv",
    flag("version", help="kernel version number"),
    flag("-m", "--message", help="submission description (default: the push message)"),
    flag("--wait", action="store_true", help="poll until the submission is scored"),
    flag("--timeout", type=float, default=1800.0, metavar="S", help="give up waiting after S seconds (default 1800)"),
    ALLOW_SMOKE,
    JSON,
)
def cmd_submit(args) -> int:
    from lorakit.submit import submission_create, submission_wait

    out = args.out
    if args.wait:  # before submitting: a bad --timeout must not cost a submission
        _positive(args.timeout, "--timeout")
    project, remote = _project(args), _remote()
    result = submission_create(project, remote, args.version, args.message, args.allow_smoke)
    data = _submitted_show(out, result)
    if args.wait:
        scored = submission_wait(project, remote, result.ref, result.version, args.timeout, _score_poll(out))
        _scored_show(out, data, scored)
    out.document(data)
    out.progress("next: lorakit scores")
    return 0


@command(
    "scores",
    "my submissions and scores, written into the ledger; best candidates marked",
    CSV,
    flag("--plot", metavar="PATH", help="write a PNG of public score and validation accuracy by version"),
    JSON,
)
def cmd_scores(args) -> int:
    from lorakit.ledger import kernel_same
    from lorakit.scores import scores_get, scores_plot, scores_plot_check

    _one_format(args)
    out = args.out
    project = _project(args)
    if args.plot:
        scores_plot_check(args.plot)
    scores = scores_get(project, _remote())
    headers = ["mark", "version", "ref", "status", "public", "private", "gap", "val_acc", "date", "overrides"]
    rows = []
    best_val_version = int(scores.best_validation["version"]) if scores.best_validation else None
    for r in scores.rows:
        s = r.submission
        mark = "P" if scores.best_public is not None and r is scores.best_public else ""
        if scores.best_validation is not None and r.version == best_val_version and kernel_same(
                r.kernel, scores.best_validation["kernel_ref"]):
            mark += "V"
        rows.append([mark, _version_label(project, r.version, r.kernel), s.ref, s.status,
                     _fmt(s.public_score, 5), _fmt(s.private_score, 5), _fmt(r.gap, 5), _fmt(r.val_accuracy),
                     s.date[:16].replace("T", " "), r.overrides or ""])
    out.document(scores.as_json())
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    elif not rows:
        out.result(f"no submissions to {project.competition} yet")
    else:
        out.result(_table(headers, rows))
        out.result("")
        if scores.best_public is not None:
            b = scores.best_public
            out.result(f"P best public score:  {_version_label(project, b.version, b.kernel)} "
                       f"({_fmt(b.submission.public_score, 5)})")
        if scores.best_validation is not None:
            v = scores.best_validation
            out.result(f"V best validation:    {_version_label(project, int(v['version']), v['kernel_ref'])} "
                       f"({_fmt(v.get('val_accuracy'))})")
        if scores.best_public is not None or scores.best_validation is not None:
            out.result("  -> the candidates for the two final submissions")
    _note("versions that were never submitted are listed by lorakit versions")
    for version in scores.unrecorded:
        _warn(f"v{version} has submissions but no ledger row; its scores were not recorded")
    for version, kernel, words in scores.not_candidates:
        _note(f"{_version_label(project, version, kernel)} is not a candidate: it predicted on {words}")
    for version in scores.not_submitted:
        _warn(f"v{version}'s unconfirmed submission never reached Kaggle; submit it again: lorakit submit {version}")
    if args.plot:
        _err(f"lorakit: wrote {scores_plot(project, args.plot)}")
    return 0


def _version_label(project, version: Optional[int], kernel: str) -> str:
    """v<N> for the project's kernel, owner/slug v<N> for another one; "?" when no version is known."""
    from lorakit.ledger import kernel_same

    if version is None:
        return "?"
    return f"v{version}" if not kernel or kernel_same(kernel, str(project.kernel)) else f"{kernel} v{version}"


@command(
    "versions",
    "every version the ledger knows, newest first: state, config changes, validation accuracy with its "
    "confidence interval, scores (offline: status, pull, scores and sync refresh it)",
    CSV,
    JSON,
)
def cmd_versions(args) -> int:
    from lorakit.versions import REFRESHED_BY, TABLE_HEADERS, table_cells, versions_csv, versions_list

    _one_format(args)
    out = args.out
    project = _project(args)
    rows = versions_list(project)
    out.document({"kernel": str(project.kernel), "versions": [r.as_json() for r in rows]})
    if args.csv:
        sys.stdout.write(versions_csv(rows))
    elif not rows:
        out.result(f"no versions of {project.kernel} in the ledger yet: lorakit push records them")
    else:
        out.result(_table(list(TABLE_HEADERS), [table_cells(r, message_width=40) for r in rows]))
        _note(f"offline: {REFRESHED_BY}")
    return 0


@command(
    "leaderboard",
    "the public leaderboard with my rank highlighted",
    flag("--top", type=int, default=20, metavar="N", help="rows to show (default 20)"),
    flag("--download", metavar="DIR", help="also download the full leaderboard zip into DIR"),
    JSON,
)
def cmd_leaderboard(args) -> int:
    from lorakit.scores import leaderboard_get

    out = args.out
    project = _project(args)
    shown, me, zip_path = leaderboard_get(project, _remote(), args.top, args.download)
    out.document({"competition": project.competition, "rows": [r.as_json() for r in shown],
                  "me": None if me is None else me.as_json(), "download": None if zip_path is None else str(zip_path)})
    rows = [[">" if r.mine else "", r.rank, r.team_name, _fmt(r.score, 5), r.date] for r in shown]
    if me is not None and me not in shown:
        rows.append(["", "...", "", "", ""])
        rows.append([">", me.rank, me.team_name, _fmt(me.score, 5), me.date])
    if rows:
        out.result(_table(["", "rank", "team", "score", "date"], rows))
    else:
        out.result(f"the leaderboard of {project.competition} is empty")
    if me is not None:
        out.result(f"your rank: {me.rank} ({me.team_name}, {_fmt(me.score, 5)})")
    else:
        out.result("you are not on the leaderboard yet (or beyond the pages read)")
    if zip_path is not None:
        out.progress(f"downloaded the full leaderboard to {zip_path}")
    return 0


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
    from lorakit.compare import compare, is_version

    out = args.out
    project = _project(args) if is_version(args.a) or is_version(args.b) else None  # two files need no checkout
    c = compare(project, args.a, args.b)
    out.document(c.as_json())
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
    if c.config_diff is None:
        out.result(f"config: {c.config_reason}")
    else:
        out.result(f"config {a} -> {b}:" + ("" if c.config_diff else " the same"))
        for key, (before, after) in c.config_diff.items():
            out.result(f"  {key}: {'unset' if before is None else before} -> {'unset' if after is None else after}")
        for key, (before, after) in c.where_diff.items():
            out.result(f"  {key} (where, not what: not in config_hash): {before} -> {after}")
    out.result(_table(["metric", a, b, f"{b} - {a}"], _metrics_rows(c.a.metrics(), c.b.metrics())))
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
    out.result(_table(["class", f"{a} rows", f"{b} agrees", f"{b} rows", f"{a} agrees", f"{a} share", f"{b} share"],
                      rows))
    if t.confidence_a is not None:
        out.result(f"mean confidence on the {t.disagreements} disagreements: {a} {t.confidence_a:.3f}, "
                   f"{b} {t.confidence_b:.3f}")
    elif t.disagreements:
        out.result("(confidence on the disagreements needs both versions' probabilities.csv)")


@command(
    "sync",
    "rebuild or complete the ledger from Kaggle: every version of the kernel (status, metrics.json, what its push "
    "recorded) and every submission matched to its version; a row that disagrees is reported, never overwritten",
    flag("--dry-run", action="store_true", help="read Kaggle and show what would change; write nothing"),
    JSON,
)
def cmd_sync(args) -> int:
    from lorakit.sync import ledger_sync

    project = _project(args)
    report = ledger_sync(project, _remote(), args.dry_run)
    args.out.document(report.as_json())
    _sync_show(args.out, project, report)
    return 0


def _sync_show(out: Output, project, report) -> None:
    """The versions' and the submissions' tables, a warning per conflict or unreadable part, and what was written."""
    out.result(f"{report.kernel}: v1 to v{report.latest} on Kaggle, {len(report.submissions)} submission(s) to "
               f"{project.competition}")
    out.result(_table(["version", "action", "columns / why"],
                      [[f"v{c.version}", c.action, c.detail if c.action in ("conflict", "absent") else
                        ", ".join(c.columns)] for c in report.versions]))
    mine = [c for c in report.submissions if c.action != "other"]
    if mine:
        out.result(_table(["submission", "version", "action", "columns / why"],
                          [[c.ref, f"v{c.version}", c.action, ", ".join(c.columns) or c.detail] for c in mine]))
    for c in (*report.versions, *report.submissions):
        if c.action == "conflict":
            what = f"submission {c.ref} of v{c.version}" if c.ref else f"v{c.version}"
            _warn(f"{what} conflicts with the ledger: {c.detail}")
        for problem in c.problems:
            _warn(f"v{c.version}: {problem}")
    _sync_unknown_note(report)
    counts = ", ".join(f"{sum(c.action == a for c in report.versions)} {a}"
                       for a in ("added", "completed", "unchanged", "conflict"))
    verb = "dry run, nothing written to" if report.dry_run else "wrote" if report.written else "nothing to change in"
    out.result(f"{verb} {project.ledger_path.relative_to(project.root)} ({counts})")


def _sync_unknown_note(report) -> None:
    """Name the versions whose push-only columns stay unknown: no push record at all, or one without some."""
    from lorakit.sync import PUSH_ONLY

    none = [f"v{c.version}" for c in report.versions if len(c.unknown) == len(PUSH_ONLY)]
    if none:
        _note(f"{', '.join(none)} carry no push record (pushed before lorakit wrote one): their message, "
              "git commit, dirty flag, push time and accelerator stay unknown")
    for missing in sorted({c.unknown for c in report.versions if 0 < len(c.unknown) < len(PUSH_ONLY)}):
        which = [f"v{c.version}" for c in report.versions if c.unknown == missing]
        _note(f"{', '.join(which)}: the push record holds no {', '.join(missing)} (git's are empty when the "
              "push was not made from a git checkout)")


@command("quota", "GPU hours used and left this week, and the run minutes per version", JSON)
def cmd_quota(args) -> int:
    from lorakit.quota import quota_get

    out = args.out
    q = quota_get(_project(args), _remote())
    out.document(q.as_json())
    if q.used_hours is None:
        out.result("GPU quota: Kaggle returned no GPU quota")
    else:
        out.result(
            f"GPU quota this week: {q.used_hours:.2f} h used, {_fmt(q.left_hours, 2)} h left of "
            f"{_fmt(q.total_hours, 2)} h" + (f" (refreshes {q.refresh} UTC)" if q.refresh else "")
        )
    if q.minutes_by_version:
        out.result(_table(["version", "run minutes"], [[f"v{v}", f"{m:.1f}"] for v, m in q.minutes_by_version]))
        total = sum(m for _, m in q.minutes_by_version)
        out.result(f"recorded runs: {total:.1f} min ({total / 60:.2f} h) over {len(q.minutes_by_version)} version(s)")
    else:
        out.result("no run minutes recorded yet (lorakit pull fills them)")
    return 0


@command(
    "report",
    "write one self-contained HTML file: the versions table, validation curves, confusion matrices and scores "
    "over time (offline, from the ledger and the pulled folders)",
    flag("--out", dest="out_path", metavar="PATH", help="where to write it (default submissions/report.html)"),
    flag("--versions", metavar="N,M", help="whose curves and confusion matrices to show, e.g. 3,5,7 "
                                           "(default: the newest 8 pulled versions)"),
    flag("--open", action="store_true", help="then open it in the default web browser"),
    JSON,
)
def cmd_report(args) -> int:
    import webbrowser

    from lorakit.report import report_make, report_path_check, versions_parse

    project = _project(args)
    path = report_path_check(project, args.out_path)
    report = report_make(project, path, versions_parse(args.versions))
    for note in report.notes:
        _note(note)
    args.out.document(report.as_json())
    shown = ", ".join(f"v{v}" for v in report.versions) or "no pulled version"
    where = path.resolve().relative_to(project.root) if path.resolve().is_relative_to(project.root) else path
    args.out.result(f"wrote {where} ({report.charts} charts; curves of {shown})")
    if args.open and not webbrowser.open(path.resolve().as_uri()):
        _warn(f"no web browser could be started: open {path} by hand")
    return 0


@command(
    "validate",
    "check a submission CSV with the kernel's rules",
    flag("file", metavar="FILE", help="the CSV to check"),
    flag("--rows", type=int, metavar="N",
         help="expected rows (default: test_rows of metrics.json beside it, else 8000)"),
    JSON,
)
def cmd_validate(args) -> int:
    from pathlib import Path

    from lorakit.project import repo_found
    from lorakit.submit import submission_validate

    project = _project(args) if repo_found(args.repo) else None  # outside a checkout: the kernel lorakit ships
    args.out.partial = {"file": args.file, "valid": False}
    rows = submission_validate(project, Path(args.file), args.rows)
    args.out.document({"file": args.file, "valid": True, "rows": rows})
    args.out.result(f"{args.file}: valid submission ({rows} rows, columns ID,Label, labels 0-3)")
    return 0


@command(
    "plan",
    "LoRA placements and sizes that fit the budget, as ready --set strings",
    flag("--budget", type=int, metavar="N", help="trainable-parameter budget (default: the kernel's param_budget)"),
    flag("--top", type=int, default=20, metavar="K", help="how many to print (default 20)"),
    flag("--head", action="append", metavar="HEAD", help="only these heads (repeatable or comma-separated)"),
    flag("--targets", action="append", metavar="T1,T2", help="only this target set (repeatable)"),
    flag("--ranks", action="append", metavar="R1,R2", help="ranks to try (default 1,2,4,8,16,32,64)"),
    flag("--layers", action="append", metavar="L", help="all or top:K (default: all and every top:K)"),
    JSON,
)
def cmd_plan(args) -> int:
    from lorakit.planner import PlanRequest, budget_plan

    out = args.out
    plan = budget_plan(_project(args), PlanRequest(args.budget, args.top, args.head, args.targets, args.ranks,
                                                   args.layers))
    out.document({"budget": plan.budget, "layers": plan.layers, "enumerated": plan.enumerated,
                  "fitting": plan.fitting, "evidence_source": plan.evidence_source,
                  "configs": [c.as_json() for c in plan.candidates]})
    out.result(
        f"budget {plan.budget:,}: {plan.fitting:,} of {plan.enumerated:,} placements fit (head x targets x layers); "
        "the default first, then those the accuracy bench measured, then by LoRA size, each at its largest "
        "rank (exact counts, meta device)"
    )
    rows = [
        ["default" if c.default else i, c.short_placement, c.layers, c.head, c.r, f"{c.total:,}", c.evidence or "-",
         c.set_string]
        for i, c in enumerate(plan.candidates)
    ]
    out.result(_table(["#", "lora_targets", "layers", "head", "r", "total", "MiniLM val acc (vs default)",
                       "settings"], rows))
    out.result(f"evidence: {plan.evidence_source}; attn.out = attention.output.dense, ffn.in = intermediate.dense, "
               "ffn.out = output.dense")
    return 0


@command(
    "run",
    "push, wait for the run and pull its outputs in one go; --submit goes on to submit and wait for the score",
    *PUSH_FLAGS,
    flag("--submit", action="store_true", help="then submit submissions/v<N>/submission.csv and wait for the score"),
    flag("--follow", action="store_true", help="stream the run's log while waiting"),
    flag("--timeout", type=float, default=3600.0, metavar="S",
         help="give up waiting for the run after S seconds (default 3600)"),
    flag("--score-timeout", type=float, default=1800.0, metavar="S",
         help="give up waiting for the score after S seconds (default 1800)"),
    ALLOW_SMOKE,
    JSON,
)
def cmd_run(args) -> int:
    from lorakit.run import RunOptions, run_pipeline

    out = args.out
    options = RunOptions(_push_options(args), args.submit, args.timeout, args.score_timeout, args.allow_smoke)
    project = _project(args)
    result = run_pipeline(project, None if options.push.dry_run else _remote(), options, _run_show(args, project))
    if result.pulled is None:  # a dry run
        out.document(out.partial)
        return 0
    if result.score is not None:
        _scored_show(out, out.partial["submission"], result.score)
    out.partial.setdefault("submission", None)
    out.document(out.partial)
    step_next = "next: lorakit scores" if args.submit else _pull_next(project, result.pulled)
    if step_next:
        out.progress(step_next)
    return 0


def _run_show(args, project):
    """What `lorakit run` prints as its steps go, and the partial document each adds to."""
    from lorakit.run import RunShow

    out = args.out

    def pushed(result) -> None:
        _push_show(out, project, result, hints=False)
        out.partial = {"version": result.version, "push": result.as_json()}

    def ran(_version, status) -> None:
        out.partial["status"] = status.as_json()

    def pulled(result) -> None:
        _pull_show(out, project, result)
        out.partial["pull"] = result.as_json()

    return RunShow(warn=_warn, pushed=pushed, on_poll=_on_poll(out.progress), on_log=_log_shown(out, args.follow),
                   ran=ran, on_wait=lambda m: _err(f"lorakit: {m}"), pulled=pulled,
                   submitted=lambda result: _submitted_show(out, result), on_score_poll=_score_poll(out))


SWEEP_ONE_AT_A_TIME = ("Arms run one at a time: no Kaggle documentation we could find states how many GPU runs of "
                       "one account may run at once (users report two; no documented guarantee), so there is no "
                       "--parallel.")
SWEEP_STILL_RUNNING = ("an arm already running on Kaggle keeps running (and using GPU time) after Ctrl-C: Kaggle's "
                       "API has no way to cancel a version")
SWEEP_RECORDED = {"--grid": ("grid", []), "--from-plan": ("from_plan", None), "--config": ("config_file", None),
                  "--set": ("sets", []), "-m": ("message", ""), "--seeds": ("seeds", 1),
                  "--submit-best": ("submit_best", 0), "--allow-smoke": ("allow_smoke", False),
                  "--accelerator": ("accelerator", None), "--again": ("again", False)}  # --resume reads them back


@command(
    "sweep",
    "push a grid of configs one arm after another (push, wait, pull each), then rank them by validation accuracy "
    "with a paired test against the best",
    flag("--grid", action="append", default=[], metavar="KEY=V1,V2",
         help="one axis of the grid (repeatable: every combination of the axes is an arm)"),
    flag("--from-plan", type=int, metavar="N", help="also one arm per row of the first N rows of lorakit plan"),
    flag("--config", dest="config_file", metavar="FILE",
         help='also one arm per override object of a JSON list, e.g. [{"lora_r": 4}, {"lora_targets": "query,value"}]'),
    SETS,
    flag("-m", "--message", default="", help="prefix of each arm's message (which names the sweep id and the arm)"),
    flag("--seeds", type=int, default=1, metavar="K",
         help="run each arm K times, with seeds seed, seed+1, ...: the table shows each arm's mean and spread, "
              "its tests against the best paired seed by seed (a seed changes the validation rows)"),
    flag("--submit-best", type=int, default=0, metavar="K",
         help="then submit the best K arms by validation accuracy: never more than today's submissions left, never "
              "a smoke run"),
    ALLOW_SMOKE,
    flag("--accelerator", metavar="SHAPE", help="machine shape of every arm, e.g. NvidiaTeslaT4"),
    flag("--again", action="store_true", help="also push arms whose config already ran to COMPLETE outside the sweep"),
    flag("--timeout", type=float, default=3600.0, metavar="S",
         help="give up waiting for an arm's run after S seconds (default 3600)"),
    flag("--follow", action="store_true", help="stream each arm's log while waiting"),
    flag("--dry-run", action="store_true",
         help="check and count every arm and show the GPU time against the quota left; record and push nothing"),
    flag("--resume", metavar="ID",
         help="carry on sweep ID (submissions/sweeps/ID.json) after Ctrl-C or an error: settles pushes whose reply "
              "was lost, waits for and pulls the arms pushed, pushes only those never pushed. "
              f"Note: {SWEEP_STILL_RUNNING}. {SWEEP_ONE_AT_A_TIME} Exit 3 when an arm's run failed."),
    JSON,
)
def cmd_sweep(args) -> int:
    from lorakit import sweep as sw
    from lorakit.errors import RunFailed

    out = args.out
    project = _project(args)
    sweep = _sweep_resumed(args, project) if args.resume else sw.sweep_new(project, _sweep_request(args))
    out.partial = {"sweep": sweep.id, "dry_run": args.dry_run, "shared_sets": list(sweep.shared),
                   "planned": [a.as_json() for a in sweep.arms], **_sweep_plan_show(out, project, sweep)}
    if args.dry_run:
        out.progress("dry run: nothing recorded, nothing pushed")
        out.document(out.partial)
        return 0
    if not args.resume:
        path = sw.sweep_record(project, sweep)
        out.progress(f"recorded {path.relative_to(project.root)} (carry on after Ctrl-C or an error: "
                     f"lorakit sweep --resume {sweep.id})")
    remote = _remote()
    try:
        outcomes = sw.sweep_run(project, remote, sweep, _sweep_show(args, project))
    except Interrupted as exc:
        raise Interrupted(f"{exc}; {SWEEP_STILL_RUNNING}", exc.version) from None
    ranked = sw.sweep_rank(project, sweep)
    out.partial["ranked"] = [r.as_json() for r in ranked]
    _sweep_ranked_show(out, sweep, ranked)
    if sweep.options.submit_best:
        submitted = sw.sweep_submit(project, remote, sweep, ranked)
        out.partial["submissions"] = submitted.as_json()
        _sweep_submitted_show(out, submitted)
    failed = [o for o in outcomes if o.state != "pulled"]
    for outcome in failed:
        _warn(f"{outcome.arm.label} (v{outcome.version}) {outcome.state}")
    out.document(out.partial)
    return RunFailed.exit_code if failed else 0


def _sweep_request(args):
    from lorakit.sweep import SweepOptions, SweepRequest

    options = SweepOptions(args.message, args.seeds, args.submit_best, args.allow_smoke, args.accelerator,
                           args.timeout, args.again)
    return SweepRequest(tuple(args.grid), args.from_plan, args.config_file, tuple(args.sets), options)


def _sweep_resumed(args, project):
    """The recorded sweep, its --timeout the one given now; the flags that define a sweep are refused."""
    from dataclasses import replace

    from lorakit.sweep import sweep_load

    given = [name for name, (dest, default) in SWEEP_RECORDED.items() if getattr(args, dest) != default]
    if given:
        raise ArgumentError(f"--resume carries on with the arms and options recorded in the sweep file: drop "
                            f"{', '.join(given)}")
    sweep = sweep_load(project, args.resume)
    return replace(sweep, options=replace(sweep.options, timeout=args.timeout))


def _sweep_plan_show(out: Output, project, sweep) -> dict:
    """The arms about to be pushed, their exact counts and the GPU time they may take against the quota left;
    what it showed, for the JSON document."""
    from lorakit.sweep import gpu_minutes
    from lorakit.quota import gpu_hours_left

    rows = [[a.label, " ".join(a.own) or "-", f"{a.trainable_params:,}", a.config_hash[:12], f"{a.time_limit_minutes:g}"]
            for a in sweep.arms]
    out.result(f"sweep {sweep.id}: {len(sweep.arms)} run(s), each checked by the kernel's config rules and within "
               "the parameter budget")
    out.result(_table(["arm", "settings", "trainable", "config_hash", "max minutes"], rows))
    out.result(f"shared     {' '.join(sweep.shared) or '-'}")
    minutes = gpu_minutes(project, sweep)
    if minutes is None:
        out.result("GPU time   none (the accelerator asked for is none)")
        return {"gpu_minutes": None, "gpu_hours_left": None}
    left, why = gpu_hours_left(_remote)
    shown = "unknown" if left is None else f"{left:.1f} h"
    out.result(f"GPU time   up to {minutes / 60:.1f} h in all (each run's time_limit_minutes); GPU quota left this "
               f"week: {shown}")
    if left is None:
        _note(f"{why}: the sweep's GPU time is not compared with the quota")
    elif minutes / 60 > left:
        _warn(f"the sweep may take up to {minutes / 60:.1f} h of GPU time but {left:.1f} h are left this week: "
              "its later arms may stop early")
    return {"gpu_minutes": minutes, "gpu_hours_left": left}


def _sweep_show(args, project):
    """What `lorakit sweep` prints as its arms go: each arm's steps as `lorakit run` prints them."""
    from lorakit.sweep import SweepShow

    out = args.out
    arm = argparse.Namespace(out=Output(out.as_json), follow=args.follow)  # each arm's own partial document
    done = out.partial.setdefault("arms", [])

    def started(a, version) -> None:
        arm.out.partial = {}
        out.progress(f"--- {a.label} ({' '.join(a.own) or 'the shared config'}): "
                     + (f"carrying on v{version}" if version else "pushing"))

    def ended(outcome) -> None:
        done.append({**outcome.as_json(), "run": arm.out.partial or None})
        out.progress(f"{outcome.arm.label}: v{outcome.version} {outcome.state}"
                     + (" (pushed before)" if outcome.resumed else ""))

    return SweepShow(_run_show(arm, project), started, ended)


def _sweep_ranked_show(out: Output, sweep, ranked: list) -> None:
    seeds = sweep.options.seeds > 1
    headers = ["#", "arm", "versions", "settings", "trainable", "mean val_acc" if seeds else "val_acc",
               *(["spread"] if seeds else []), "wins best/arm", "p", "p (Holm)", "vs best"]
    rows = []
    for i, r in enumerate(ranked, start=1):
        wins = "-" if r.best_wins is None else f"{r.best_wins}/{r.arm_wins} of {r.rows}"
        rows.append([i, r.name, ",".join(f"v{v}" for v in r.versions if v) or "-", " ".join(r.sets) or "-",
                     f"{r.trainable_params:,}", _fmt(r.mean), *([_fmt(r.spread)] if seeds else []), wins,
                     _p(r.p_value), _p(r.p_holm), r.words or "no validation accuracy"])
    out.result(f"sweep {sweep.id} ranked by validation accuracy" + (f" (mean of {sweep.options.seeds} seeds)" if seeds else ""))
    out.result(_table(headers, rows))
    out.result("p: exact McNemar test against the best on the same validation rows"
               + (" (summed over the seeds, each paired with the best's run of the same seed)" if seeds else "")
               + "; p (Holm): corrected for the arms compared")


def _p(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2g}"


def _sweep_submitted_show(out: Output, submitted) -> None:
    shown = Output(out.as_json)  # prints as out does; its partial is not the sweep's document
    for result in submitted.results:
        _submitted_show(shown, result)
    for version in submitted.already:
        _note(f"v{version} of this sweep was submitted before: not submitted again")
    for why in submitted.skipped:
        _note(f"not submitted: {why}")
    if submitted.results:
        out.progress("next: lorakit scores")


# ------------------------------------------------------------------------------------------------ parser
class CommandLineError(Exception):
    """What argparse found wrong with the command line; main prints it as argparse would, and as the one JSON
    document under --json."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse (its subcommands too), raising CommandLineError instead of exiting on an error."""

    def error(self, message):
        raise CommandLineError(self, message)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", metavar="DIR", help="start the search for kernel-metadata.json here (default: cwd)")
    common.add_argument("--kernel", metavar="OWNER/SLUG", help="override the kernel id of kernel-metadata.json")
    common.add_argument("--competition", metavar="SLUG", help="override the competition (default: competition_sources[0])")

    parser = Parser(
        prog="lorakit",
        description="The local Kaggle workflow for the AG News LoRA kernel: every version a recorded experiment.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lorakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, flags, handler in COMMANDS:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        for names, options in flags:
            p.add_argument(*names, **options)
        p.set_defaults(func=handler)
    return parser


@contextlib.contextmanager
def termination_as_interrupt():
    """SIGTERM and SIGHUP (a closed terminal, a dropped SSH session, `timeout`, a cancelled CI job) get
    Ctrl-C's treatment: KeyboardInterrupt where the command is, so that what it sent is recorded and the
    message says how to resume. Further ones are ignored until it has done so."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(_signum, _frame):
        for name in names:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {name: signal.signal(getattr(signal, name), interrupt) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def stdout_discard() -> None:
    """Point stdout at the null device, so that nothing more (the flush at exit included) meets the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a captured stdout): nothing to redirect
        pass


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        return _command_run(argv)
    except BrokenPipeError:  # stdout closed early (lorakit plan | head -1): stop quietly, as SIGPIPE would
        stdout_discard()
        return 141


def _command_run(argv: list) -> int:
    try:
        args = build_parser().parse_args(argv)
    except CommandLineError as exc:
        exc.parser.print_usage(sys.stderr)
        _err(f"{exc.parser.prog}: error: {exc}")
        Output("--json" in argv).failure(str(exc), 2)
        return 2
    out = args.out = Output(getattr(args, "json", False))
    with termination_as_interrupt():
        return _main_run(args, out)


def _main_run(args, out: Output) -> int:
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise
    except LorakitError as exc:
        message = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        _err(f"lorakit: {'interrupted' if isinstance(exc, Interrupted) else 'error'}: {message}")
        out.failure(message, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        _err("lorakit: interrupted")
        out.failure("interrupted", 130)
        return 130
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            return _internal_error(exc, out)
        message = (f"{exc.strerror} ({exc.filename or 'writing a file'}): free some space and run the command "
                   "again; what Kaggle was already sent is in the ledger by its token and is not sent twice")
        _err(f"lorakit: error: {message}")
        out.failure(message, LorakitError.exit_code)
        return LorakitError.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless debugging
        return _internal_error(exc, out)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the machine's fault, not lorakit's: said as one line


def _internal_error(exc: Exception, out: Output) -> int:
    """A bug: one line (the traceback with LORAKIT_DEBUG=1), exit 70."""
    if os.environ.get("LORAKIT_DEBUG"):
        raise exc
    first = str(exc).splitlines()[0] if str(exc) else ""
    _err(f"lorakit: internal error: {type(exc).__name__}: {first} (set LORAKIT_DEBUG=1 for the traceback)")
    out.failure(f"internal error: {type(exc).__name__}: {first}", 70)
    return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
