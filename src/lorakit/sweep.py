"""`lorakit sweep`: a grid of configs pushed, run and pulled, then ranked and paired.

- Arms (lorakit.arms): the cartesian product of ``--grid KEY=V1,V2`` (repeatable), the first N rows of
  `lorakit plan` (``--from-plan N``) and the override objects of a JSON list (``--config FILE``); ``--set`` is
  shared by every arm; ``--seeds K`` repeats each arm with seeds seed, seed+1, ... (one push each).
- Before anything is pushed, every arm goes through the push's own offline checks (push_plan: the kernel's
  config rules, the exact count, the budget, the render): one refused arm refuses the whole sweep. An arm whose
  config already ran (COMPLETE, or still running) is taken from the ledger, not pushed, unless --again.
- Recorded before sent: submissions/sweeps/<id>.json (arms, shared settings, options), then each arm's ledger
  row carries ``sweep_id``. An arm is found again by its sweep id and config_hash, so ``--resume`` pushes only
  the arms never pushed (and, with --retry-failed, those whose run failed), waits for and pulls the others,
  and never pushes an arm twice. An arm running on Kaggle when the sweep stops keeps running: Kaggle's API
  cannot cancel a version (the CLI says so).
- One arm at a time, through run_pipeline (push -> wait -> pull), as `lorakit run` does; with --parallel N up
  to N at once (lorakit.parallel). A push Kaggle refuses for the GPU session count waits, it does not fail.
- Ranked by validation accuracy (the mean over seeds), each arm paired with the best on the same validation
  rows (exact McNemar; with seeds, the discordant rows summed over the seeds, each seed's slice paired with
  the same seed's), Holm-corrected over the arms (lorakit.ranking).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from lorakit.arms import Arm, Sweep, SweepOptions, SweepRequest, arm_row, sweep_load, sweep_new, sweep_record
from lorakit.common import FAILED_KERNEL, TERMINAL_KERNEL, accelerator_asked, failure_text, kernel_ref_resolve, ledger_of
from lorakit.console import (
    ALLOW_SMOKE, JSON, SETS, Output, command, flag, note, plural, project_of, remote_new, seconds_check, table, warn,
)
from lorakit.errors import ArgumentError, FlagNeeded, Interrupted, LorakitError, Refused, RunFailed, Unconfirmed, UsageError
from lorakit.follow import environment_record, kernel_failure_raise, kernel_status_wait, status_record
from lorakit.inflight import UNSETTLED, push_unsettled_words, pushes_settle
from lorakit.parallel import Lanes, lanes_run, session_waited
from lorakit.preflight import competition_preflight, sources_preflight
from lorakit.project import Project
from lorakit.pull import kernel_output_pull
from lorakit.push import kernel_push, push_plan
from lorakit.quota import gpu_hours_left, quota_weigh, run_estimate
from lorakit.ranking import Ranked, ranked_noise, ranked_table, run_accuracy, sweep_rank
from lorakit.remote import KernelStatus, Remote
from lorakit.retry import Poll
from lorakit.run import RunOptions, RunShow, run_pipeline, run_show
from lorakit.runs import pulled_run_load
from lorakit.submit import submission_create, submissions_left, submitted_show


# ----------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ArmOutcome:
    arm: Arm
    version: Optional[int]
    state: str  # pulled, or failed: why
    resumed: bool = False  # pushed by an earlier command (found in the ledger), not now
    reused: bool = False  # a version outside the sweep that ran its config: taken from the ledger, not pushed

    def as_json(self) -> dict:
        return {**self.arm.as_json(), "version": self.version, "state": self.state,
                "resumed": self.resumed, "reused": self.reused}


@dataclass(frozen=True)
class SweepShow:
    """What the caller hears as the arms go: each arm's start (its version when it was pushed before, and
    whether it is one taken from the ledger) and end, each arm's run_pipeline steps (``run_of(arm)``), and an
    arm's wait for a GPU session."""

    run_of: Callable[[Arm], RunShow] = lambda _arm: RunShow()
    started: Callable[[Arm, Optional[int], bool], None] = lambda _arm, _version, _reused: None
    ended: Callable[[ArmOutcome], None] = lambda _outcome: None
    waiting: Callable[[str], None] = lambda _line: None


def sweep_settle(project: Project, remote: Remote, sweep: Sweep) -> None:
    """Settle the pushes whose reply was lost (the sweep's among them): by their token, as every command does
    (the ledger then says which went through, and which never did: NOT_PUSHED, to be pushed again)."""
    pushes_settle(project, remote, kernel_ref_resolve(project, remote))


def sweep_run(project: Project, remote: Remote, sweep: Sweep, show: SweepShow = SweepShow(),
              retry_failed: bool = False) -> list:
    """Each arm in turn: pushed, waited for and pulled (run_pipeline), or, when the ledger holds its run (its
    push by this sweep, or the version it reuses), waited for and pulled only; with --parallel N, up to N at
    once (lanes_run). A failed run is that arm's outcome (pushed again with ``retry_failed``); anything else
    stops the sweep, with how to carry on."""
    outcomes = []
    try:
        sweep_settle(project, remote, sweep)
        if sweep.options.parallel > 1:
            return lanes_run(list(sweep.arms), arm_lanes(project, remote, sweep, show, retry_failed),
                             sweep.options.parallel, Poll.of(remote.policy, sweep.options.timeout), show.waiting)
        for arm in sweep.arms:
            outcomes.append(_arm_run(project, remote, sweep, arm, show, retry_failed))
            show.ended(outcomes[-1])
    except KeyboardInterrupt:
        raise _carry_on(Interrupted("interrupted between arms; the ledger is up to date"), sweep) from None
    except LorakitError as exc:
        raise _carry_on(exc, sweep) from None
    return outcomes


def _carry_on(exc: LorakitError, sweep: Sweep) -> LorakitError:
    """``exc`` (same kind, same exit status), its message ending with how to carry on the sweep."""
    carried = copy.copy(exc)
    carried.args = (f"{exc}; carry on the whole sweep with: lorakit sweep --resume {sweep.id}",)
    return carried


@dataclass(frozen=True)
class ArmState:
    """An arm as the ledger holds it: its row (None: never pushed), whether that is a version taken from the
    ledger, whether its run failed, and the outcome it has when nothing more is done (``outcome``)."""

    row: Optional[dict]
    reused: bool
    failed: bool
    outcome: ArmOutcome

    @property
    def version(self) -> Optional[int]:
        """The version to wait for and pull; None when the arm is pushed (never pushed, or failed and retried)."""
        return None if self.row is None or self.failed else int(self.row["version"])


def arm_state(project: Project, sweep: Sweep, arm: Arm) -> ArmState:
    """The arm's row in the ledger and what it means; an arm whose push is still unsettled stops the sweep
    (exit 5): its sender may be alive, or Kaggle may not show it yet."""
    row = arm_row(ledger_of(project).rows(), sweep, arm)
    if row is not None and row.get("status") in UNSETTLED:  # in flight, or not found on Kaggle yet
        raise Unconfirmed(f"{arm.label}'s push {push_unsettled_words(row)}")
    version = int(row["version"]) if row else None
    reused = row is not None and row.get("sweep_id") != sweep.id
    failed = row is not None and row.get("status") in FAILED_KERNEL
    return ArmState(row, reused, failed, ArmOutcome(arm, version, "pulled", resumed=row is not None and not reused,
                                                    reused=reused))


def arm_done(project: Project, sweep: Sweep, state: ArmState, retry_failed: bool) -> Optional[ArmOutcome]:
    """The outcome of an arm that needs nothing more (its run failed and is not retried, or it is pulled); None
    when it is to be pushed, or waited for and pulled."""
    if state.failed and not retry_failed:
        return replace(state.outcome, state=f"failed: {failure_text(state.row)} (lorakit sweep --resume {sweep.id} "
                                            "--retry-failed pushes it again)")
    version = state.version
    if version is not None and state.row.get("pulled_at") and project.version_dir(version).is_dir():
        return state.outcome
    return None


def _arm_run(project: Project, remote: Remote, sweep: Sweep, arm: Arm, show: SweepShow,
             retry_failed: bool) -> ArmOutcome:
    state = arm_state(project, sweep, arm)
    done = arm_done(project, sweep, state, retry_failed)
    if done is not None:
        return done
    run, version = show.run_of(arm), state.version
    outcome = state.outcome if version is not None else ArmOutcome(arm, None, "pulled")  # else pushed now
    show.started(arm, version, state.reused and version is not None)
    try:
        if version is None:
            _unchanged_check(project, sweep, arm)
            options = RunOptions(sweep.push_options(arm), timeout=sweep.options.timeout)
            version = session_waited(lambda: run_pipeline(project, remote, options, run), arm.label,
                                     Poll.of(remote.policy, sweep.options.timeout), show.waiting).pushed.version
            return replace(outcome, version=version)
        version, status = kernel_status_wait(project, remote, version, sweep.options.timeout, run.on_poll, run.on_log)
        return _arm_ended(project, remote, outcome, status, run)
    except RunFailed as exc:  # the run ended in ERROR: this arm's outcome, the next arm goes on
        row = arm_row(ledger_of(project).rows(), sweep, arm)
        return replace(outcome, version=int(row["version"]) if row else version, state=f"failed: {exc}")


def _arm_ended(project: Project, remote: Remote, outcome: ArmOutcome, status: KernelStatus,
               run: RunShow) -> ArmOutcome:
    """``outcome`` of an arm whose run (``outcome.version``) ended: failed, or pulled."""
    run.ran(outcome.version, status)
    try:
        kernel_failure_raise(outcome.version, status)
    except RunFailed as exc:
        return replace(outcome, state=f"failed: {exc}")
    run.pulled(kernel_output_pull(project, remote, outcome.version, on_wait=run.on_wait))
    return outcome


def arm_lanes(project: Project, remote: Remote, sweep: Sweep, show: SweepShow, retry_failed: bool) -> Lanes:
    """The steps of each arm for lanes_run (sweep --parallel): _arm_run's, a status read at a time."""
    ref = kernel_ref_resolve(project, remote)
    seen: dict = {}  # arm label -> (when it was first polled, its last status, its outcome so far)

    def done(arm: Arm) -> Optional[ArmOutcome]:
        outcome = arm_done(project, sweep, arm_state(project, sweep, arm), retry_failed)
        if outcome is not None:
            show.ended(outcome)
        return outcome

    def pushed(arm: Arm) -> Optional[int]:
        state = arm_state(project, sweep, arm)
        if state.version is not None:
            show.started(arm, state.version, state.reused)
            seen[arm.label] = (time.monotonic(), None, state.outcome)
        return state.version

    def push(arm: Arm) -> int:
        if arm.label not in seen:
            show.started(arm, None, False)
            _unchanged_check(project, sweep, arm)
        result = kernel_push(project, remote, sweep.push_options(arm), show.run_of(arm).warn)
        show.run_of(arm).pushed(result)
        seen[arm.label] = (time.monotonic(), None, ArmOutcome(arm, result.version, "pulled"))
        return result.version

    def ended(arm: Arm, version: int) -> bool:
        status = remote.kernel_status_get(ref, version)
        status_record(ledger_of(project), version, status)
        since, _, outcome = seen[arm.label]
        seen[arm.label] = (since, status, outcome)
        show.run_of(arm).on_poll(version, status, time.monotonic() - since)
        if status.status in TERMINAL_KERNEL:
            environment_record(project, remote, ref, version, status)
        return status.status in TERMINAL_KERNEL

    def finish(arm: Arm, version: int) -> ArmOutcome:
        _, status, outcome = seen[arm.label]
        outcome = _arm_ended(project, remote, replace(outcome, version=version), status, show.run_of(arm))
        show.ended(outcome)
        return outcome

    return Lanes(done, pushed, push, ended, finish)


def _unchanged_check(project: Project, sweep: Sweep, arm: Arm) -> None:
    """Refuse to push an arm whose config is no longer the one recorded (the kernel script or its block
    changed since): the sweep would not find it again, nor compare like with like."""
    now = push_plan(project, sweep.push_options(arm)).effective.config_hash
    if now != arm.config_hash:
        raise UsageError(f"{arm.label}'s config_hash is now {now[:12]}, but the sweep recorded {arm.config_hash[:12]}: "
                         "the kernel script changed since; start a new sweep")


# ---------------------------------------------------------------------------------------------- submitting
@dataclass(frozen=True)
class Submitted:
    results: tuple  # SubmitResult of each submission made now
    already: tuple  # versions of this sweep submitted by an earlier command
    skipped: tuple  # why each of the best K not submitted was not

    def as_json(self) -> dict:
        return {"submitted": [r.as_json() for r in self.results], "already": list(self.already),
                "skipped": list(self.skipped)}


def _best_version(project: Project, arm: Ranked) -> Optional[int]:
    """The arm's run with the best validation accuracy that left a submission.csv."""
    runs = [(pulled_run_load(project, v), v) for v in arm.versions if v is not None]
    runs = [(run_accuracy(run), v) for run, v in runs if (run.folder / "submission.csv").is_file()]
    runs = [(a, v) for a, v in runs if a is not None]
    return max(runs)[1] if runs else None


def sweep_submit(project: Project, remote: Remote, sweep: Sweep, ranked: list) -> Submitted:
    """Submit the best ``submit_best`` arms by validation (each its best seed's run) through submission_create,
    never more than today's submissions left; the arms this sweep submitted before count as done."""
    want = sweep.options.submit_best
    rows = {int(r["version"]): r for r in ledger_of(project).rows() if r.get("sweep_id") == sweep.id}
    best = [_best_version(project, arm) for arm in ranked if arm.mean is not None]
    best = [v for v in best if v is not None][:want]
    already = tuple(v for v in best if rows.get(v, {}).get("submission_ref"))
    todo = [v for v in best if v not in already]
    skipped = []
    if len(best) < want:
        skipped.append(f"{want - len(best)} of the best {want}: only {plural(len(best), 'arm')} "
                       f"{'has' if len(best) == 1 else 'have'} a validation accuracy and a submission.csv")
    notes: list = []
    left = submissions_left(project, remote, notes) if todo else None
    if left is not None and left < len(todo):
        skipped.append(f"{len(todo) - left} of the best {want} ({', '.join(f'v{v}' for v in todo[left:])}): "
                       f"only {plural(left, 'submission')} left today")
        todo = todo[:left]
    results = tuple(submission_create(project, remote, v, None, sweep.options.allow_smoke) for v in todo)
    return Submitted(results, already, (*skipped, *notes))


# ------------------------------------------------------------------------------------- the command line
SWEEP_PARALLEL = ("No Kaggle documentation we could find states how many GPU sessions one account may hold at once "
                  "(users report two): Kaggle's refusal (Maximum batch GPU session count of N reached) says, so "
                  "--parallel learns the limit from it and waits for a session.")
SWEEP_STILL_RUNNING = ("an arm already running on Kaggle keeps running (and using GPU time) after Ctrl-C: Kaggle's "
                       "API has no way to cancel a version")
SWEEP_RECORDED = {"--grid": ("grid", []), "--from-plan": ("from_plan", None), "--config": ("config_file", None),
                  "--set": ("sets", []), "-m": ("message", ""), "--seeds": ("seeds", 1),
                  "--submit-best": ("submit_best", 0), "--allow-smoke": ("allow_smoke", False),
                  "--accelerator": ("accelerator", None), "--again": ("again", False),
                  "--session-timeout-minutes": ("session_timeout_minutes", None)}  # --resume reads them back


@command(
    "sweep",
    "push a grid of configs one arm after another, or N at once with --parallel (push, wait, pull each), then rank "
    "them by validation accuracy with a paired test against the best; an arm whose config already ran is taken "
    "from the ledger",
    flag("--grid", action="append", default=[], metavar="KEY=V1,V2",
         help="one axis of the grid (repeatable: every combination of the axes is an arm); values that hold commas "
              "are separated by | instead: --grid 'lora_targets=query,value|query,key,value,dense'"),
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
              "a smoke run; it says when the validation rows cannot tell the best from the next"),
    ALLOW_SMOKE,
    flag("--accelerator", metavar="SHAPE", help="machine shape of every arm, e.g. NvidiaTeslaT4"),
    flag("--again", action="store_true",
         help="push every arm, also those whose config already ran to COMPLETE (or runs now) outside the sweep, "
              "which are otherwise taken from the ledger: ranked with the others, not pushed"),
    flag("--yes", action="store_true",
         help="do not ask: a sweep of more than one run shows its plan and asks on a terminal before it pushes, "
              "and without a terminal (a script) it is refused unless --yes"),
    flag("--timeout", type=float, default=3600.0, metavar="S",
         help="give up waiting for an arm's run, or for a GPU session to push it, after S seconds (default 3600)"),
    flag("--session-timeout-minutes", type=float, metavar="M",
         help="Kaggle stops each arm's session after M minutes (default: its time_limit_minutes + 30, at most 12 h); "
              "--timeout only stops lorakit waiting"),
    flag("--parallel", type=int, default=1, metavar="N",
         help="up to N arms on Kaggle at once, the next pushed while earlier ones run (default 1); a refusal for "
              "the GPU session count makes an arm wait, not fail"),
    flag("--over-quota", action="store_true",
         help="push even when the estimates of the arms not yet pushed exceed the GPU hours left this week"),
    flag("--follow", action="store_true", help="stream each arm's log while waiting (with --parallel 1)"),
    flag("--dry-run", action="store_true",
         help="check and count every arm and show the GPU time against the quota left; record and push nothing"),
    flag("--resume", metavar="ID",
         help="carry on sweep ID (submissions/sweeps/ID.json; lorakit sync restores it in another clone) after "
              "Ctrl-C or an error: settles pushes whose reply was lost, waits for and pulls the arms pushed, pushes "
              f"only those never pushed. Note: {SWEEP_STILL_RUNNING}. {SWEEP_PARALLEL} Exit 3 when an arm's run "
              "failed."),
    flag("--retry-failed", action="store_true", help="with --resume: push the arms whose run failed again"),
    JSON,
)
def cmd_sweep(args) -> int:
    out = args.out
    _sweep_flags_check(args)
    project = project_of(args)
    sweep = _sweep_resumed(args, project) if args.resume else sweep_new(project, _sweep_request(args))
    for warning in sweep.warnings:
        warn(warning)
    remote = remote_new()
    _sweep_preflight(project, remote, sweep)
    out.partial = {"sweep": sweep.id, "dry_run": args.dry_run, "shared_sets": list(sweep.shared),
                   "planned": [a.as_json() for a in sweep.arms], **_sweep_plan_show(out, project, sweep, remote)}
    _sweep_weigh(sweep, out.partial, args.dry_run)
    if args.dry_run:
        out.progress("dry run: nothing recorded, nothing pushed")
        out.document(out.partial)
        return 0
    if not args.resume:
        _sweep_confirm(args, sweep)
        path = sweep_record(project, sweep)
        out.progress(f"recorded {path.relative_to(project.root)} (carry on after Ctrl-C or an error: "
                     f"lorakit sweep --resume {sweep.id})")
    try:
        outcomes = sweep_run(project, remote, sweep, _sweep_show(args, project, sweep), args.retry_failed)
    except Interrupted as exc:
        raise Interrupted(f"{exc}; {SWEEP_STILL_RUNNING}", exc.version) from None
    return _sweep_ended(out, (project, remote, sweep), outcomes)


def _sweep_ended(out: Output, where: tuple, outcomes: list) -> int:
    """The ranking, the submissions of --submit-best and the failed arms, once every arm ended; the exit status."""
    project, remote, sweep = where
    ranked = sweep_rank(project, sweep)
    out.partial["ranked"] = [r.as_json() for r in ranked]
    _sweep_ranked_show(out, sweep, ranked)
    if sweep.options.submit_best:
        submitted = sweep_submit(project, remote, sweep, ranked)
        out.partial["submissions"] = submitted.as_json()
        _sweep_submitted_show(out, submitted)
    failed = [o for o in outcomes if o.state != "pulled"]
    for outcome in failed:
        warn(f"{outcome.arm.label} (v{outcome.version}) {outcome.state}")
    out.document(out.partial)
    return RunFailed.exit_code if failed else 0


def _sweep_flags_check(args) -> None:
    """The flags that cannot go together, before anything is read or asked."""
    seconds_check(args.timeout, "--timeout")
    if args.parallel < 1 or (args.follow and args.parallel > 1):
        raise ArgumentError("--parallel takes a positive number of arms; --follow streams one log: use it with "
                            "--parallel 1")
    if args.retry_failed and not args.resume:
        raise ArgumentError("--retry-failed carries on a recorded sweep: lorakit sweep --resume ID --retry-failed")


def _sweep_preflight(project, remote: Remote, sweep) -> None:
    """Before anything is recorded: the competition (--submit-best on a closed one is refused) and the sources of
    the metadata, as each arm's push asks them again."""
    notes: list = []
    state = competition_preflight(remote, project.competition, "--submit-best" if sweep.options.submit_best else "",
                                  notes)
    sources_preflight(remote, project.metadata, state, notes)
    for line in notes:
        note(line)


def _sweep_request(args):
    options = SweepOptions(args.message, args.seeds, args.submit_best, args.allow_smoke, args.accelerator,
                           args.timeout, args.again, args.session_timeout_minutes, args.over_quota, args.parallel)
    return SweepRequest(tuple(args.grid), args.from_plan, args.config_file, tuple(args.sets), options)


def _sweep_resumed(args, project):
    """The recorded sweep, its --timeout, --parallel and --over-quota those given now; the flags that define a
    sweep are refused."""
    given = [name for name, (dest, default) in SWEEP_RECORDED.items() if getattr(args, dest) != default]
    if given:
        raise ArgumentError(f"--resume carries on with the arms and options recorded in the sweep file: drop "
                            f"{', '.join(given)}")
    sweep = sweep_load(project, args.resume)
    return replace(sweep, options=replace(sweep.options, timeout=args.timeout, parallel=args.parallel,
                                          over_quota=args.over_quota))


def _terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # no stdin, or a closed one
        return False


def _sweep_confirm(args, sweep) -> None:
    """A sweep of more than one run asks before it pushes: on a terminal; without one (a script), refused
    unless --yes. Nothing is recorded or pushed before the answer."""
    pushes = len(sweep.pushes)
    if args.yes or len(sweep.arms) < 2 or not pushes:
        return
    if not _terminal():
        raise FlagNeeded(f"a sweep of {plural(len(sweep.arms), 'run')} asks before it pushes, and there is no terminal "
                         "to ask on: add --yes (or see the plan with --dry-run); nothing recorded, nothing pushed")
    print(f"push {plural(pushes, 'run')} of this sweep now? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):  # Ctrl-D: end the prompt's line
        print(file=sys.stderr)
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("not confirmed: nothing recorded, nothing pushed")


def _sweep_plan_show(out: Output, project, sweep, remote: Remote) -> dict:
    """The arms about to be pushed (and those taken from the ledger), their exact counts, and the GPU time of
    those not pushed yet (each at its estimate) against the hours left; what it showed, for the JSON document."""
    ledger_rows = ledger_of(project).rows()
    rows = [[a.label, " ".join(a.own) or "-", f"{a.trainable_params:,}", a.config_hash[:12], f"{a.time_limit_minutes:g}",
             _arm_plan_text(sweep, arm_row(ledger_rows, sweep, a))] for a in sweep.arms]
    out.result(f"sweep {sweep.id}: {plural(len(sweep.arms), 'run')}, each checked by the kernel's config rules and "
               "within the parameter budget")
    out.result(table(["arm", "settings", "trainable", "config_hash", "max minutes", "run"], rows))
    out.result(f"shared     {' '.join(sweep.shared) or '-'}")
    reused = [a for a in sweep.arms if a.reuses is not None]
    if reused:
        out.result(f"from the ledger: {', '.join(f'{a.label} (v{a.reuses})' for a in reused)} ran this config "
                   "already: ranked with the others, not pushed again (--again pushes it)")
    asked = accelerator_asked(project.metadata, sweep.options.accelerator)
    if asked == "none":
        out.result("GPU time   none (the accelerator asked for is none)")
        return {"gpu_minutes": None, "gpu_hours_left": None, "arms_to_push": None}
    estimates = [run_estimate(ledger_rows, asked, a.time_limit_minutes)
                 for a in sweep.arms if arm_row(ledger_rows, sweep, a) is None]  # those on Kaggle hold time_reserved
    minutes = sum(e.minutes for e in estimates)
    left, why = gpu_hours_left(lambda: remote, asked)
    shown = "unknown" if left is None else f"{left:.1f} h"
    sources = "; ".join(sorted({e.source for e in estimates})) or "every arm is on Kaggle or in the ledger"
    out.result(f"GPU time   up to {minutes / 60:.1f} h in all for {plural(len(estimates), 'arm')} to push "
               f"({sources}); GPU quota left this week: {shown}")
    if left is None:
        note(f"{why}: the sweep's GPU time is not weighed against it")
    return {"gpu_minutes": minutes, "gpu_hours_left": left, "arms_to_push": len(estimates)}


def _sweep_weigh(sweep, plan: dict, dry_run: bool) -> None:
    """Refuse the sweep (unless --over-quota) when the estimates of its arms to push exceed the hours left; a
    dry run only warns."""
    try:
        overridden = quota_weigh(plan["gpu_hours_left"], plan["gpu_minutes"] or 0.0,
                                 f"the sweep's {plural(plan['arms_to_push'] or 0, 'arm')} to push",
                                 sweep.options.over_quota)
    except FlagNeeded as exc:
        if not dry_run:
            raise
        overridden = str(exc)
    if overridden:
        warn(overridden)


def _arm_plan_text(sweep, row: Optional[dict]) -> str:
    """What becomes of an arm: pushed, or the version of the ledger it is (this sweep's, or one taken from it)."""
    if row is None:
        return "push"
    whose = "this sweep's" if row.get("sweep_id") == sweep.id else "taken from the ledger, not pushed"
    return f"v{row['version']} {row.get('status') or '?'} ({whose})"


def _sweep_show(args, project, sweep):
    """What `lorakit sweep` prints as its arms go: each arm's steps as `lorakit run` prints them, each arm with
    its own partial document (with --parallel, arms interleave), and a warning or note that every arm's push
    repeats (too few validation rows, the placeholder owner) once."""
    out = args.out
    arms: dict = {}  # arm label -> (its Namespace, whose Output holds the arm's own partial document; its RunShow)
    warned = set(sweep.warnings)
    done = out.partial.setdefault("arms", [])

    def warn_once(text: str) -> None:
        if text not in warned:
            warned.add(text)
            warn(text)

    def arm_of(a) -> tuple:
        if a.label not in arms:
            space = argparse.Namespace(out=Output(out.as_json), follow=args.follow)
            steps = run_show(space, project)

            def pushed_once(result) -> None:
                fresh = tuple(n for n in result.notes if n not in warned)
                warned.update(result.notes)
                steps.pushed(replace(result, notes=fresh))

            arms[a.label] = (space, replace(steps, warn=warn_once, pushed=pushed_once))
        return arms[a.label]

    def started(a, version, reused) -> None:
        arms.pop(a.label, None)
        doing = ("pushing" if version is None else f"waiting for v{version}, which runs this config (taken from the "
                 "ledger, not pushed)" if reused else f"carrying on v{version}")
        out.progress(f"--- {a.label} ({' '.join(a.own) or 'the shared config'}): {doing}")

    def ended(outcome) -> None:
        done.append({**outcome.as_json(), "run": arm_of(outcome.arm)[0].out.partial or None})
        why = (" (taken from the ledger: it ran this config before; not pushed)" if outcome.reused
               else " (pushed before)" if outcome.resumed else "")
        out.progress(f"{outcome.arm.label}: v{outcome.version} {outcome.state}{why}")

    return SweepShow(lambda a: arm_of(a)[1], started, ended, note)


def _sweep_ranked_show(out: Output, sweep, ranked: list) -> None:
    """The ranked table, and, where the best cannot be told from the next, by how much the rows fall short."""
    headers, rows, caption = ranked_table(sweep, ranked)
    out.result(f"sweep {sweep.id} ranked by validation accuracy"
               + (f" (mean of {sweep.options.seeds} seeds)" if sweep.options.seeds > 1 else ""))
    out.result(table(headers, rows))
    out.result(caption)
    noise = ranked_noise(ranked)
    if noise:
        out.result(f"noise: {noise}")
        if sweep.options.submit_best:
            warn(f"--submit-best {sweep.options.submit_best} picks {ranked[0].name} on noise: {noise}")


def _sweep_submitted_show(out: Output, submitted) -> None:
    shown = Output(out.as_json)  # prints as out does; its partial is not the sweep's document
    for result in submitted.results:
        submitted_show(shown, result)
    for version in submitted.already:
        note(f"v{version} of this sweep was submitted before: not submitted again")
    for why in submitted.skipped:
        note(f"not submitted: {why}")
    if submitted.results:
        out.progress("next: lorakit scores")
