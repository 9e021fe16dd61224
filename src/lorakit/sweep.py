"""`lorakit sweep`: a grid of configs pushed, run and pulled one after another, then ranked and paired.

- Arms (lorakit.arms): the cartesian product of ``--grid KEY=V1,V2`` (repeatable), the first N rows of
  `lorakit plan` (``--from-plan N``) and the override objects of a JSON list (``--config FILE``); ``--set`` is
  shared by every arm; ``--seeds K`` repeats each arm with seeds seed, seed+1, ... (one push each).
- Before anything is pushed, every arm goes through the push's own offline checks (push_plan: the kernel's
  config rules, the exact count, the budget, the render): one refused arm refuses the whole sweep.
- Recorded before sent: submissions/sweeps/<id>.json (arms, shared settings, options), then each arm's ledger
  row carries ``sweep_id``. An arm is found again by its sweep id and config_hash, so ``--resume`` pushes only
  the arms never pushed, waits for and pulls the others, and never pushes an arm twice. An arm running on
  Kaggle when the sweep stops keeps running: Kaggle's API cannot cancel a version (the CLI says so).
- One arm at a time, through run_pipeline (push -> wait -> pull), as `lorakit run` does; with ``--parallel
  N`` up to N arms on Kaggle at once (lorakit.parallel), the next pushed while earlier ones run. Kaggle's
  "Maximum batch GPU session count of N reached" is no failed arm: the arm waits for a session (bounded by
  --timeout, with a line saying so) and is pushed again.
- Weighed before the first push: the competition (rules, deadline; --submit-best on a closed one is refused) and
  the arms not yet pushed, each at its estimate (lorakit.quota), against the GPU hours left: more is refused
  without --over-quota.
- Ranked by validation accuracy (the mean over seeds), each arm paired with the best on the same validation
  rows (exact McNemar; with seeds, the discordant rows summed over the seeds, each seed's slice paired with
  the same seed's), Holm-corrected over the arms.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

from lorakit.arms import Arm, Sweep, SweepOptions, SweepRequest, sweep_load, sweep_new, sweep_record
from lorakit.common import (
    FAILED_KERNEL, NOT_PUSHED, TERMINAL_KERNEL, accelerator_asked, kernel_ref_resolve, ledger_of,
)
from lorakit.console import (
    ALLOW_SMOKE, JSON, SETS, Output, command, flag, fmt, note, project_of, remote_new, seconds_check, table, warn,
)
from lorakit.errors import ArgumentError, FlagNeeded, Interrupted, LorakitError, RunFailed, Unconfirmed, UsageError
from lorakit.follow import environment_record, kernel_failure_raise, kernel_status_wait, status_record
from lorakit.inflight import UNSETTLED, push_unsettled_words, pushes_settle
from lorakit.parallel import Lanes, lanes_run, session_waited
from lorakit.preflight import competition_preflight, sources_preflight
from lorakit.project import Project
from lorakit.pull import kernel_output_pull
from lorakit.push import kernel_push, push_plan
from lorakit.quota import gpu_hours_left, quota_weigh, run_estimate
from lorakit.remote import KernelStatus, Remote
from lorakit.retry import Poll
from lorakit.run import RunOptions, RunShow, run_pipeline, run_show
from lorakit.runs import PulledRun, paired_test, pulled_run_load
from lorakit.stats import holm, mcnemar_exact, mean_spread, verdict
from lorakit.submit import submission_create, submissions_left, submitted_show


# ----------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ArmOutcome:
    arm: Arm
    version: Optional[int]
    state: str  # pulled, or failed: why
    resumed: bool = False  # pushed by an earlier command (found in the ledger), not now

    def as_json(self) -> dict:
        return {**self.arm.as_json(), "version": self.version, "state": self.state,
                "resumed": self.resumed}


@dataclass(frozen=True)
class SweepShow:
    """What the caller hears as the arms go: each arm's start (its version when it was pushed before) and
    end, each arm's run_pipeline steps (``run_of(arm)``), and an arm's wait for a GPU session."""

    run_of: Callable[[Arm], RunShow] = lambda _arm: RunShow()
    started: Callable[[Arm, Optional[int]], None] = lambda _arm, _version: None
    ended: Callable[[ArmOutcome], None] = lambda _outcome: None
    waiting: Callable[[str], None] = lambda _line: None


def arm_row(rows: list, sweep: Sweep, arm: Arm) -> Optional[dict]:
    """The row of the arm's push among the ledger's ``rows`` (by sweep id and config_hash); None when it was
    never pushed."""
    mine = [r for r in rows if r.get("sweep_id") == sweep.id
            and r.get("config_hash") == arm.config_hash and r.get("status") != NOT_PUSHED]
    return mine[-1] if mine else None


def sweep_settle(project: Project, remote: Remote, sweep: Sweep) -> None:
    """Settle the pushes whose reply was lost (the sweep's among them): by their token, as every command does
    (the ledger then says which went through, and which never did: NOT_PUSHED, to be pushed again)."""
    pushes_settle(project, remote, kernel_ref_resolve(project, remote))


def sweep_run(project: Project, remote: Remote, sweep: Sweep, show: SweepShow = SweepShow()) -> list:
    """Each arm in turn: pushed, waited for and pulled (run_pipeline), or, when the ledger holds its push,
    waited for and pulled only; with --parallel N, up to N at once (lanes_run). A failed run is that arm's
    outcome; anything else stops the sweep, with how to carry on."""
    outcomes = []
    try:
        sweep_settle(project, remote, sweep)
        if sweep.options.parallel > 1:
            return lanes_run(list(sweep.arms), arm_lanes(project, remote, sweep, show), sweep.options.parallel,
                             Poll.of(remote.policy, sweep.options.timeout), show.waiting)
        for arm in sweep.arms:
            outcomes.append(_arm_run(project, remote, sweep, arm, show))
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


def _arm_done(row: Optional[dict], arm: Arm) -> Optional[ArmOutcome]:
    """The outcome of an arm whose run the ledger holds as ended and seen to (failed, or pulled); else None."""
    if row and row.get("status") in FAILED_KERNEL:
        return ArmOutcome(arm, int(row["version"]), f"failed: {row['status']}", resumed=True)
    if row and row.get("pulled_at"):
        return ArmOutcome(arm, int(row["version"]), "pulled", resumed=True)
    return None


def _arm_run(project: Project, remote: Remote, sweep: Sweep, arm: Arm, show: SweepShow) -> ArmOutcome:
    row = arm_row(ledger_of(project).rows(), sweep, arm)
    if row is not None and row.get("status") in UNSETTLED:  # in flight, or not found on Kaggle yet
        raise Unconfirmed(f"{arm.label}'s push {push_unsettled_words(row)}")
    done = _arm_done(row, arm)
    if done is not None:
        return done
    version, before, run = (int(row["version"]) if row else None), row is not None, show.run_of(arm)
    show.started(arm, version)
    try:
        if row is None:
            _unchanged_check(project, sweep, arm)
            options = RunOptions(sweep.push_options(arm), timeout=sweep.options.timeout)
            version = session_waited(lambda: run_pipeline(project, remote, options, run), arm.label,
                                     Poll.of(remote.policy, sweep.options.timeout), show.waiting).pushed.version
        else:
            version, status = kernel_status_wait(project, remote, version, sweep.options.timeout, run.on_poll,
                                                 run.on_log)
            return _arm_ended(project, remote, (arm, version, before), status, run)
    except RunFailed as exc:  # the run ended in ERROR: this arm's outcome, the next arm goes on
        row = arm_row(ledger_of(project).rows(), sweep, arm)
        return ArmOutcome(arm, int(row["version"]) if row else version, f"failed: {exc}", before)
    return ArmOutcome(arm, version, "pulled", before)


def _arm_ended(project: Project, remote: Remote, pushed: tuple, status: KernelStatus, run: RunShow) -> ArmOutcome:
    """The outcome of an arm whose run ended (``pushed``: the arm, its version, whether pushed before): failed,
    or pulled."""
    arm, version, before = pushed
    run.ran(version, status)
    try:
        kernel_failure_raise(version, status)
    except RunFailed as exc:
        return ArmOutcome(arm, version, f"failed: {exc}", before)
    run.pulled(kernel_output_pull(project, remote, version, on_wait=run.on_wait))
    return ArmOutcome(arm, version, "pulled", before)


def arm_lanes(project: Project, remote: Remote, sweep: Sweep, show: SweepShow) -> Lanes:
    """The steps of each arm for lanes_run (sweep --parallel): _arm_run's, a status read at a time."""
    ref = kernel_ref_resolve(project, remote)
    seen: dict = {}  # arm label -> (when it was first polled, its last status, pushed before)

    def pushed(arm: Arm) -> Optional[int]:
        row = arm_row(ledger_of(project).rows(), sweep, arm)
        if row is not None:
            show.started(arm, int(row["version"]))
            seen[arm.label] = (time.monotonic(), None, True)
        return int(row["version"]) if row else None

    def push(arm: Arm) -> int:
        if arm.label not in seen:
            show.started(arm, None)
            _unchanged_check(project, sweep, arm)
        seen[arm.label] = (time.monotonic(), None, False)
        result = kernel_push(project, remote, sweep.push_options(arm), show.run_of(arm).warn)
        show.run_of(arm).pushed(result)
        return result.version

    def ended(arm: Arm, version: int) -> bool:
        status = remote.kernel_status_get(ref, version)
        status_record(ledger_of(project), version, status)
        since, _, before = seen[arm.label]
        seen[arm.label] = (since, status, before)
        show.run_of(arm).on_poll(version, status, time.monotonic() - since)
        if status.status in TERMINAL_KERNEL:
            environment_record(project, remote, ref, version, status)
        return status.status in TERMINAL_KERNEL

    def finish(arm: Arm, version: int) -> ArmOutcome:
        _, status, before = seen[arm.label]
        outcome = _arm_ended(project, remote, (arm, version, before), status, show.run_of(arm))
        show.ended(outcome)
        return outcome

    def done(arm: Arm) -> Optional[ArmOutcome]:
        outcome = _arm_done(arm_row(ledger_of(project).rows(), sweep, arm), arm)
        if outcome is not None:
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


# ------------------------------------------------------------------------------------------------ ranking
@dataclass(frozen=True)
class Ranked:
    """One arm of the sweep, its runs over the seeds, and its paired test against the best arm."""

    name: str
    sets: tuple
    versions: tuple  # one per seed (None: not pushed or not run)
    accuracies: tuple  # validation accuracy of each run that has one
    trainable_params: int
    mean: Optional[float] = None
    spread: Optional[float] = None  # sample standard deviation over the seeds (None for one seed)
    best_wins: Optional[int] = None  # validation rows the best arm got right and this one wrong
    arm_wins: Optional[int] = None
    rows: Optional[int] = None  # paired rows (summed over the seeds)
    p_value: Optional[float] = None
    p_holm: Optional[float] = None
    words: str = ""  # the verdict in words, or "best", or "not comparable: why"

    def as_json(self) -> dict:
        return {**asdict(self), "sets": list(self.sets), "versions": list(self.versions),
                "accuracies": list(self.accuracies)}


def _arm_runs(project: Project, sweep: Sweep) -> dict:
    """name -> [(arm, its version or None, its PulledRun or None)] in the sweep's order."""
    groups: dict = {}
    rows = ledger_of(project).rows()
    for arm in sweep.arms:
        row = arm_row(rows, sweep, arm)
        version = int(row["version"]) if row else None
        run = pulled_run_load(project, version) if row and row.get("pulled_at") else None
        groups.setdefault(arm.name, []).append((arm, version, run))
    return groups


def _accuracy(run: Optional[PulledRun]) -> Optional[float]:
    return None if run is None else run.numbers()["val_accuracy"]


def sweep_rank(project: Project, sweep: Sweep) -> list:
    """The arms ranked by validation accuracy (the mean over seeds; arms without one last), each paired with
    the best arm seed by seed, and the p-values Holm-corrected over the arms compared."""
    ranked = []
    for name, runs in _arm_runs(project, sweep).items():
        accuracies = tuple(a for a in (_accuracy(run) for _, _, run in runs) if a is not None)
        mean, spread = mean_spread(accuracies)
        ranked.append((Ranked(name, runs[0][0].sets, tuple(v for _, v, _ in runs), accuracies,
                              runs[0][0].trainable_params, mean, spread), runs))
    ranked.sort(key=lambda item: (item[0].mean is None, -(item[0].mean or 0.0)))
    if not ranked or ranked[0][0].mean is None:
        return [r for r, _ in ranked]
    best, best_runs = ranked[0]
    out = [replace(best, words="best")] + [_paired(best, best_runs, r, runs) for r, runs in ranked[1:]]
    tested = [i for i, r in enumerate(out) if r.p_value is not None]
    for i, adjusted in zip(tested, holm([out[i].p_value for i in tested])):
        r = out[i]
        out[i] = replace(r, p_holm=adjusted, words=verdict(best.name, r.name, r.best_wins, r.arm_wins, adjusted))
    return out


def _paired(best: Ranked, best_runs: list, arm: Ranked, runs: list) -> Ranked:
    """``arm`` with its McNemar counts against ``best``: each seed's run with the best arm's run of that seed."""
    by_seed = {a.seed: run for a, _, run in best_runs}
    wins = [0, 0, 0]
    for a, _, run in runs:
        other = by_seed.get(a.seed)
        if run is None or other is None:
            missing = a.label if run is None else f"{best.name}'s seed {a.seed}"
            return replace(arm, words=f"not comparable: {missing} has no pulled run")
        try:
            paired = paired_test(other, run)
        except UsageError as exc:
            return replace(arm, words=f"not comparable: {exc}")
        wins = [wins[0] + paired.a_wins, wins[1] + paired.b_wins, wins[2] + paired.rows]
    return replace(arm, best_wins=wins[0], arm_wins=wins[1], rows=wins[2], p_value=mcnemar_exact(wins[0], wins[1]))


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
    runs = [(_accuracy(run), v) for run, v in runs if (run.folder / "submission.csv").is_file()]
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
        skipped.append(f"{want - len(best)} of the best {want}: only {len(best)} arm(s) have a validation "
                       "accuracy and a submission.csv")
    notes: list = []
    left = submissions_left(project, remote, notes) if todo else None
    if left is not None and left < len(todo):
        skipped.append(f"{len(todo) - left} of the best {want} ({', '.join(f'v{v}' for v in todo[left:])}): "
                       f"only {left} submission(s) left today")
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
    "them by validation accuracy with a paired test against the best",
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
         help="carry on sweep ID (submissions/sweeps/ID.json) after Ctrl-C or an error: settles pushes whose reply "
              "was lost, waits for and pulls the arms pushed, pushes only those never pushed. "
              f"Note: {SWEEP_STILL_RUNNING}. {SWEEP_PARALLEL} Exit 3 when an arm's run failed."),
    JSON,
)
def cmd_sweep(args) -> int:
    out = args.out
    seconds_check(args.timeout, "--timeout")
    if args.parallel < 1 or (args.follow and args.parallel > 1):
        raise ArgumentError("--parallel takes a positive number of arms; --follow streams one log: use it with "
                            "--parallel 1")
    project = project_of(args)
    sweep = _sweep_resumed(args, project) if args.resume else sweep_new(project, _sweep_request(args))
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
        path = sweep_record(project, sweep)
        out.progress(f"recorded {path.relative_to(project.root)} (carry on after Ctrl-C or an error: "
                     f"lorakit sweep --resume {sweep.id})")
    try:
        outcomes = sweep_run(project, remote, sweep, _sweep_show(args, project))
    except Interrupted as exc:
        raise Interrupted(f"{exc}; {SWEEP_STILL_RUNNING}", exc.version) from None
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
    from dataclasses import replace


    given = [name for name, (dest, default) in SWEEP_RECORDED.items() if getattr(args, dest) != default]
    if given:
        raise ArgumentError(f"--resume carries on with the arms and options recorded in the sweep file: drop "
                            f"{', '.join(given)}")
    sweep = sweep_load(project, args.resume)
    return replace(sweep, options=replace(sweep.options, timeout=args.timeout, parallel=args.parallel,
                                          over_quota=args.over_quota))


def _sweep_plan_show(out: Output, project, sweep, remote: Remote) -> dict:
    """The arms about to be pushed, their exact counts, and the GPU time of those not pushed yet (each at its
    estimate) against the hours left; what it showed, for the JSON document."""

    rows = [[a.label, " ".join(a.own) or "-", f"{a.trainable_params:,}", a.config_hash[:12], f"{a.time_limit_minutes:g}"]
            for a in sweep.arms]
    out.result(f"sweep {sweep.id}: {len(sweep.arms)} run(s), each checked by the kernel's config rules and within "
               "the parameter budget")
    out.result(table(["arm", "settings", "trainable", "config_hash", "max minutes"], rows))
    out.result(f"shared     {' '.join(sweep.shared) or '-'}")
    asked = accelerator_asked(project.metadata, sweep.options.accelerator)
    if asked == "none":
        out.result("GPU time   none (the accelerator asked for is none)")
        return {"gpu_minutes": None, "gpu_hours_left": None, "arms_to_push": None}
    ledger_rows = ledger_of(project).rows()
    estimates = [run_estimate(ledger_rows, asked, a.time_limit_minutes)
                 for a in sweep.arms if arm_row(ledger_rows, sweep, a) is None]  # those pushed hold time_reserved
    minutes = sum(e.minutes for e in estimates)
    left, why = gpu_hours_left(lambda: remote, asked)
    shown = "unknown" if left is None else f"{left:.1f} h"
    sources = "; ".join(sorted({e.source for e in estimates})) or "every arm is pushed"
    out.result(f"GPU time   up to {minutes / 60:.1f} h in all for {len(estimates)} arm(s) to push ({sources}); GPU "
               f"quota left this week: {shown}")
    if left is None:
        note(f"{why}: the sweep's GPU time is not weighed against it")
    return {"gpu_minutes": minutes, "gpu_hours_left": left, "arms_to_push": len(estimates)}


def _sweep_weigh(sweep, plan: dict, dry_run: bool) -> None:
    """Refuse the sweep (unless --over-quota) when the estimates of its arms to push exceed the hours left; a
    dry run only warns."""
    try:
        overridden = quota_weigh(plan["gpu_hours_left"], plan["gpu_minutes"] or 0.0,
                                 f"the sweep's {plan['arms_to_push']} arm(s) to push", sweep.options.over_quota)
    except FlagNeeded as exc:
        if not dry_run:
            raise
        overridden = str(exc)
    if overridden:
        warn(overridden)


def _sweep_show(args, project):
    """What `lorakit sweep` prints as its arms go: each arm's steps as `lorakit run` prints them, each arm with
    its own partial document (with --parallel, arms interleave)."""

    out = args.out
    arms: dict = {}  # arm label -> its Namespace, whose Output holds the arm's own partial document
    done = out.partial.setdefault("arms", [])

    def arm_of(a) -> argparse.Namespace:
        return arms.setdefault(a.label, argparse.Namespace(out=Output(out.as_json), follow=args.follow))

    def started(a, version) -> None:
        arms[a.label] = argparse.Namespace(out=Output(out.as_json), follow=args.follow)
        out.progress(f"--- {a.label} ({' '.join(a.own) or 'the shared config'}): "
                     + (f"carrying on v{version}" if version else "pushing"))

    def ended(outcome) -> None:
        done.append({**outcome.as_json(), "run": arm_of(outcome.arm).out.partial or None})
        out.progress(f"{outcome.arm.label}: v{outcome.version} {outcome.state}"
                     + (" (pushed before)" if outcome.resumed else ""))

    return SweepShow(lambda a: run_show(arm_of(a), project), started, ended, note)


def _sweep_ranked_show(out: Output, sweep, ranked: list) -> None:
    seeds = sweep.options.seeds > 1
    headers = ["#", "arm", "versions", "settings", "trainable", "mean val_acc" if seeds else "val_acc",
               *(["spread"] if seeds else []), "wins best/arm", "p", "p (Holm)", "vs best"]
    rows = []
    for i, r in enumerate(ranked, start=1):
        wins = "-" if r.best_wins is None else f"{r.best_wins}/{r.arm_wins} of {r.rows}"
        rows.append([i, r.name, ",".join(f"v{v}" for v in r.versions if v) or "-", " ".join(r.sets) or "-",
                     f"{r.trainable_params:,}", fmt(r.mean), *([fmt(r.spread)] if seeds else []), wins,
                     _p(r.p_value), _p(r.p_holm), r.words or "no validation accuracy"])
    out.result(f"sweep {sweep.id} ranked by validation accuracy" + (f" (mean of {sweep.options.seeds} seeds)" if seeds else ""))
    out.result(table(headers, rows))
    out.result("p: exact McNemar test against the best on the same validation rows"
               + (" (summed over the seeds, each paired with the best's run of the same seed)" if seeds else "")
               + "; p (Holm): corrected for the arms compared")


def _p(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2g}"


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
