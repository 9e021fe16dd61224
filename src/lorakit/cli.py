"""The `lorakit` command line: a thin layer over lorakit.workflow.

Results go to stdout, progress and warnings to stderr. A user error prints one line on stderr
(``lorakit: error: ...``) and exits non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Optional

from lorakit import __version__
from lorakit.errors import LorakitError, UsageError

EPILOG = """\
typical loop:
  lorakit check --set lora_r=8          offline: exact trainable count and budget verdict
  lorakit push -m "r=8" --set lora_r=8  render the kernel with its overrides and push a new version
  lorakit status --wait                 poll the newest version until it finishes
  lorakit pull                          download its outputs into submissions/v<N>/
  lorakit submit <N> --wait             validate and submit submissions/v<N>/submission.csv
  lorakit scores                        scores of every version, best candidates marked

Retries and polling are tunable with LORAKIT_RETRY_BASE_S, LORAKIT_RETRY_TOTAL_S (budget of one call,
default 150 s), LORAKIT_RETRY_ATTEMPTS, LORAKIT_POLL_START_S and LORAKIT_POLL_MAX_S. Every request waits at
most LORAKIT_TIMEOUT_S (default 30 s) to connect and per read, so a server that never answers ends a
command within 3 minutes. A push or submission whose reply is lost is looked for on Kaggle for
LORAKIT_CONFIRM_S (default 60 s) before it is sent again; when that check fails it is recorded UNCONFIRMED
(exit 5) and never resent. A pull waits LORAKIT_LOCK_WAIT_S (default 600 s) for another pull of the same
version. LORAKIT_VERBOSE=1 shows what the kaggle client printed.

credentials, in the kaggle client's order: KAGGLE_API_TOKEN (a token or a file holding one),
~/.kaggle/access_token, kaggle.json (or KAGGLE_USERNAME + KAGGLE_KEY), then `kaggle auth login`'s cache.
"""


def _out(text: str = "") -> None:
    print(text, file=sys.stdout)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _warn(text: str) -> None:
    _err(f"lorakit: warning: {text}")


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

    project = project_load(args.repo, kernel=args.kernel, competition=args.competition)
    return project


def _remote():
    from lorakit.remote import Remote

    return Remote()


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------- commands
def cmd_check(args) -> int:
    from lorakit.workflow import config_check

    project = _project(args)
    report = config_check(project, args.sets)
    e = report.effective
    for warning in report.warnings:
        _warn(warning)
    if args.json:
        _out(json.dumps(report.as_json(), sort_keys=True))
    else:
        _out(f"script     {project.script_path.relative_to(project.root)} (compiles)")
        _out(f"metadata   {project.metadata_path.name}: {project.kernel}, competition {project.competition} (valid)")
        _out(f"overrides  {json.dumps(e.overrides, sort_keys=True)}")
        _out(e.breakdown_text())
        _out(f"config_hash {e.config_hash}")
        _out(f"lengths    {report.lengths_text()}")
        verdict = "within" if e.within_budget else "OVER"
        _out(f"verdict    {verdict} budget: {e.trainable_params:,} of {e.budget:,} trainable parameters")
    if not e.within_budget:
        _err(f"lorakit: error: {e.trainable_params:,} trainable parameters exceed param_budget {e.budget:,}")
        return 1
    return 0


def cmd_push(args) -> int:
    from lorakit.workflow import kernel_push

    project = _project(args)
    remote = None if args.dry_run else _remote()
    result = kernel_push(
        project,
        remote,
        args.message,
        sets=args.sets,
        accelerator=args.accelerator,
        no_run=args.no_run,
        predict_from=args.predict_from,
        build_dir=args.build_dir,
        dry_run=args.dry_run,
        warn=_warn,
    )
    e = result.effective
    _out(
        f"check: {e.trainable_params:,} trainable parameters (within budget {e.budget:,}), "
        f"config_hash {e.config_hash[:12]}"
    )
    for note in result.notes:
        _err(f"lorakit: note: {note}")
    if args.dry_run:
        _out(f"dry run: build folder {result.build_dir} (nothing pushed)")
        return 0
    if result.build_dir is not None:
        _out(f"build folder {result.build_dir}")
    verb = "saved (not run)" if args.no_run else "pushed"
    _out(f"{verb} v{result.version} of {result.kernel}: {result.url}")
    _out(f"ledger: {project.ledger_path.relative_to(project.root)} row v{result.version}")
    if not args.no_run:
        _out(f"next: lorakit status {result.version} --wait")
    return 0


def cmd_status(args) -> int:
    from lorakit.workflow import kernel_failure_raise, kernel_status_get, kernel_status_wait

    project = _project(args)
    remote = _remote()
    if args.wait:
        def on_poll(version, status, elapsed):
            _out(f"[{_elapsed(elapsed)}] v{version} {status.status}")
            sys.stdout.flush()

        version, status = kernel_status_wait(project, remote, args.version, args.timeout, on_poll)
    else:
        version, status = kernel_status_get(project, remote, args.version)
        _out(f"v{version} {status.status}")
    if status.failure_message:
        _out(f"failure message: {status.failure_message}")
    kernel_failure_raise(version, status)
    if status.status == "COMPLETE":
        _out(f"next: lorakit pull {version}")
    return 0


def cmd_logs(args) -> int:
    from lorakit.workflow import kernel_log_get

    project = _project(args)
    _version, text = kernel_log_get(project, _remote(), args.version)
    sys.stdout.write(text)
    return 0


def cmd_pull(args) -> int:
    from lorakit.workflow import kernel_output_pull

    project = _project(args)
    result = kernel_output_pull(project, _remote(), args.version, on_wait=lambda m: _err(f"lorakit: {m}"))
    for warning in result.warnings:
        _warn(warning)
    rel = result.folder.relative_to(project.root)
    _out(f"pulled v{result.version} into {rel}/ ({len(result.files)} files)")
    for name in result.files:
        _out(f"  {name}")
    m = result.metrics
    if m:
        from lorakit.workflow import run_minutes_of

        minutes = run_minutes_of(m)
        _out(
            f"val_accuracy {_fmt(m.get('val_accuracy'))} | trainable {int(m.get('trainable_params') or 0):,} | "
            f"run {_fmt(minutes, 1)} min | config_hash {str(m.get('config_hash') or '')[:12]}"
        )
        dist = m.get("test_label_distribution")
        if isinstance(dist, dict):
            _out("test labels  " + "  ".join(f"{k} {v}" for k, v in dist.items()))
    if "submission.csv" in result.files:
        _out(f"next: lorakit submit {result.version} --wait")
    return 0


def cmd_submit(args) -> int:
    from lorakit.workflow import submission_create, submission_wait

    project = _project(args)

    def on_poll(sub, elapsed):
        _out(f"[{_elapsed(elapsed)}] submission {sub.ref} {sub.status}")
        sys.stdout.flush()

    if args.wait and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    remote = _remote()
    result = submission_create(project, remote, args.version, args.message)
    for note in result.notes:
        _err(f"lorakit: note: {note}")
    left = "left today unknown" if result.remaining is None else f"{result.remaining} left today"
    _out(f"submitted v{result.version} as submission {result.ref} ({left})")
    if args.wait:
        sys.stdout.flush()
        s = submission_wait(project, remote, result.ref, result.version, args.timeout, on_poll)
        _out(f"scored: public {_fmt(s.public_score, 5)} | private {_fmt(s.private_score, 5)}")
    _out("next: lorakit scores")
    return 0


def cmd_scores(args) -> int:
    from lorakit.workflow import scores_get, scores_plot

    project = _project(args)
    scores = scores_get(project, _remote())
    headers = ["mark", "version", "ref", "status", "public", "private", "gap", "val_acc", "date", "overrides"]
    rows = []
    best_val_version = int(scores.best_validation["version"]) if scores.best_validation else None
    for r in scores.rows:
        s = r.submission
        mark = ""
        if scores.best_public is not None and r is scores.best_public:
            mark += "P"
        if r.version is not None and r.version == best_val_version and "V" not in mark:
            mark += "V"
        rows.append(
            [
                mark,
                f"v{r.version}" if r.version is not None else "?",
                s.ref,
                s.status,
                _fmt(s.public_score, 5),
                _fmt(s.private_score, 5),
                _fmt(r.gap, 5),
                _fmt(r.val_accuracy),
                s.date[:16].replace("T", " "),
                r.overrides or "",
            ]
        )
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    elif not rows:
        _out(f"no submissions to {project.competition} yet")
    else:
        _out(_table(headers, rows))
        _out("")
        if scores.best_public is not None:
            b = scores.best_public
            _out(f"P best public score:  v{b.version} ({_fmt(b.submission.public_score, 5)})")
        if scores.best_validation is not None:
            v = scores.best_validation
            _out(f"V best validation:    v{v['version']} ({_fmt(v.get('val_accuracy'))})")
        if scores.best_public is not None or scores.best_validation is not None:
            _out("  -> the candidates for the two final submissions")
    for version in scores.unrecorded:
        _warn(f"v{version} has submissions but no ledger row; its scores were not recorded")
    for version in scores.not_submitted:
        _warn(f"v{version}'s UNCONFIRMED submission never reached Kaggle; submit it again: lorakit submit {version}")
    if args.plot:
        path = scores_plot(project, args.plot)
        _err(f"lorakit: wrote {path}")
    return 0


def cmd_leaderboard(args) -> int:
    from lorakit.workflow import leaderboard_get

    project = _project(args)
    shown, me, zip_path = leaderboard_get(project, _remote(), args.top, args.download)
    rows = [[">" if r.mine else "", r.rank, r.team_name, _fmt(r.score, 5), r.date] for r in shown]
    if me is not None and me not in shown:
        rows.append(["", "...", "", "", ""])
        rows.append([">", me.rank, me.team_name, _fmt(me.score, 5), me.date])
    if rows:
        _out(_table(["", "rank", "team", "score", "date"], rows))
    else:
        _out(f"the leaderboard of {project.competition} is empty")
    if me is not None:
        _out(f"your rank: {me.rank} ({me.team_name}, {_fmt(me.score, 5)})")
    else:
        _out("you are not on the leaderboard yet (or beyond the pages read)")
    if zip_path is not None:
        _out(f"downloaded the full leaderboard to {zip_path}")
    return 0


def cmd_compare(args) -> int:
    from lorakit.workflow import submissions_compare

    project = _project(args)
    c = submissions_compare(project, args.a, args.b)
    _out(f"v{c.a} vs v{c.b}: {c.rows} rows, agreement {c.agreement:.2%} ({c.disagreements} rows differ)")
    rows = []
    for name, (na, agree_b, nb, agree_a) in c.per_class.items():
        rows.append(
            [
                name,
                na,
                "-" if agree_b is None else f"{agree_b:.2%}",
                nb,
                "-" if agree_a is None else f"{agree_a:.2%}",
                f"{c.distribution_a[name] / c.rows:.1%}",
                f"{c.distribution_b[name] / c.rows:.1%}",
            ]
        )
    _out(
        _table(
            ["class", f"v{c.a} rows", f"v{c.b} agrees", f"v{c.b} rows", f"v{c.a} agrees", f"v{c.a} share", f"v{c.b} share"],
            rows,
        )
    )
    if c.confidence_a is not None:
        _out(
            f"mean confidence on the {c.disagreements} disagreements: v{c.a} {c.confidence_a:.3f}, v{c.b} {c.confidence_b:.3f}"
        )
    elif c.disagreements:
        _out("(no probabilities.csv in both folders: confidence on the disagreements not shown)")
    return 0


def cmd_quota(args) -> int:
    from lorakit.workflow import quota_get

    project = _project(args)
    q = quota_get(project, _remote())
    if q.used_hours is None:
        _out("GPU quota: Kaggle returned no GPU quota")
    else:
        _out(
            f"GPU quota this week: {q.used_hours:.2f} h used, {_fmt(q.left_hours, 2)} h left of {_fmt(q.total_hours, 2)} h"
            + (f" (refreshes {q.refresh} UTC)" if q.refresh else "")
        )
    if q.minutes_by_version:
        _out(_table(["version", "run minutes"], [[f"v{v}", f"{m:.1f}"] for v, m in q.minutes_by_version]))
        total = sum(m for _, m in q.minutes_by_version)
        _out(f"recorded runs: {total:.1f} min ({total / 60:.2f} h) over {len(q.minutes_by_version)} version(s)")
    else:
        _out("no run minutes recorded yet (lorakit pull fills them)")
    return 0


def cmd_validate(args) -> int:
    from pathlib import Path

    from lorakit.project import repo_found
    from lorakit.workflow import submission_validate

    project = _project(args) if repo_found(args.repo) else None  # outside a checkout: the kernel lorakit ships
    rows = submission_validate(project, Path(args.file), args.rows)
    _out(f"{args.file}: valid submission ({rows} rows, columns ID,Label, labels 0-3)")
    return 0


def cmd_plan(args) -> int:
    from lorakit.planner import budget_plan

    project = _project(args)
    plan = budget_plan(
        project, args.budget, args.top, heads=args.head, targets=args.targets, ranks=args.ranks, layers=args.layers
    )
    if args.json:
        _out(
            json.dumps(
                {
                    "budget": plan.budget,
                    "layers": plan.layers,
                    "enumerated": plan.enumerated,
                    "fitting": plan.fitting,
                    "evidence_source": plan.evidence_source,
                    "configs": [c.as_json() for c in plan.candidates],
                },
                sort_keys=True,
            )
        )
        return 0
    _out(
        f"budget {plan.budget:,}: {plan.fitting:,} of {plan.enumerated:,} placements fit (head x targets x layers); "
        "the default first, then those the accuracy bench measured, then by LoRA size, each at its largest "
        "rank (exact counts, meta device)"
    )
    rows = [
        ["default" if c.default else i, c.short_placement, c.layers, c.head, c.r, f"{c.total:,}", c.evidence or "-",
         c.set_string]
        for i, c in enumerate(plan.candidates)
    ]
    _out(_table(["#", "lora_targets", "layers", "head", "r", "total", "MiniLM val acc (vs default)", "settings"], rows))
    _out(f"evidence: {plan.evidence_source}; attn.out = attention.output.dense, ffn.in = intermediate.dense, "
         "ffn.out = output.dense")
    return 0


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", metavar="DIR", help="start the search for kernel-metadata.json here (default: cwd)")
    common.add_argument("--kernel", metavar="OWNER/SLUG", help="override the kernel id of kernel-metadata.json")
    common.add_argument("--competition", metavar="SLUG", help="override the competition (default: competition_sources[0])")

    parser = argparse.ArgumentParser(
        prog="lorakit",
        description="The local Kaggle workflow for the AG News LoRA kernel: every version a recorded experiment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lorakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name, func, help_text, description=None):
        p = sub.add_parser(name, parents=[common], help=help_text, description=description or help_text)
        p.set_defaults(func=func)
        return p

    sets_help = "override one config key of the kernel (repeatable; booleans are true/false)"

    p = add(
        "check",
        cmd_check,
        "offline preflight: exact trainable count, budget verdict, metadata and script checks",
    )
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=sets_help)
    p.add_argument("--json", action="store_true", help="print one JSON object (trainable_params, param_breakdown, within_budget, config_hash)")

    p = add("push", cmd_push, "check, render the kernel with its overrides, push a new version and record it")
    p.add_argument("-m", "--message", required=True, help="what this version tries (kept in the ledger)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=sets_help)
    p.add_argument("--accelerator", metavar="SHAPE", help="machine shape, e.g. NvidiaTeslaT4 (overrides the metadata)")
    p.add_argument("--no-run", action="store_true", help="save the version without running it (quick save)")
    p.add_argument(
        "--predict-from",
        metavar="N",
        type=int,
        help="predict only, with the adapter of version N (attached through kernel_sources; Kaggle attaches the kernel's latest output)",
    )
    p.add_argument("--build-dir", metavar="DIR", help="render the build folder here and keep it (default: a temporary folder, removed after the push)")
    p.add_argument("--dry-run", action="store_true", help="check and render the build folder, push nothing")

    p = add("status", cmd_status, "the status of a version (default: the newest in the ledger)")
    p.add_argument("version", nargs="?", help="kernel version number")
    p.add_argument("--wait", action="store_true", help="poll with backoff until the run finishes")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="give up waiting after S seconds (default 3600)")

    p = add("logs", cmd_logs, "the run's log as text (default: the newest version)")
    p.add_argument("version", nargs="?", help="kernel version number")

    p = add("pull", cmd_pull, "download a version's outputs into submissions/v<N>/ and fill its ledger row")
    p.add_argument("version", nargs="?", help="kernel version number (default: the newest in the ledger)")

    p = add("submit", cmd_submit, "validate and submit submissions/v<N>/submission.csv")
    p.add_argument("version", help="kernel version number")
    p.add_argument("-m", "--message", help="submission description (default: the push message)")
    p.add_argument("--wait", action="store_true", help="poll until the submission is scored")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="give up waiting after S seconds (default 1800)")

    p = add("scores", cmd_scores, "my submissions and scores, written into the ledger; best candidates marked")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of public score and validation accuracy by version")

    p = add("leaderboard", cmd_leaderboard, "the public leaderboard with my rank highlighted")
    p.add_argument("--top", type=int, default=20, metavar="N", help="rows to show (default 20)")
    p.add_argument("--download", metavar="DIR", help="also download the full leaderboard zip into DIR")

    p = add("compare", cmd_compare, "agreement and label distributions of two pulled versions")
    p.add_argument("a", metavar="A", help="first version")
    p.add_argument("b", metavar="B", help="second version")

    add("quota", cmd_quota, "GPU hours used and left this week, and the run minutes per version")

    p = add("validate", cmd_validate, "check a submission CSV with the kernel's rules")
    p.add_argument("file", metavar="FILE", help="the CSV to check")
    p.add_argument("--rows", type=int, metavar="N", help="expected rows (default: test_rows of metrics.json beside it, else 8000)")

    p = add("plan", cmd_plan, "LoRA placements and sizes that fit the budget, as ready --set strings")
    p.add_argument("--budget", type=int, metavar="N", help="trainable-parameter budget (default: the kernel's param_budget)")
    p.add_argument("--top", type=int, default=20, metavar="K", help="how many to print (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--head", action="append", metavar="HEAD", help="only these heads (repeatable or comma-separated)")
    p.add_argument("--targets", action="append", metavar="T1,T2", help="only this target set (repeatable)")
    p.add_argument("--ranks", action="append", metavar="R1,R2", help="ranks to try (default 1,2,4,8,16,32,64)")
    p.add_argument("--layers", action="append", metavar="L", help="all or top:K (default: all and every top:K)")
    return parser


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LorakitError as exc:
        message = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        _err(f"lorakit: error: {message}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("lorakit: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless debugging
        if os.environ.get("LORAKIT_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _err(f"lorakit: internal error: {type(exc).__name__}: {first} (set LORAKIT_DEBUG=1 for the traceback)")
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
