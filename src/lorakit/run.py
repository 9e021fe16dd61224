"""`lorakit run`: push, wait for the run, pull its outputs and, with --submit, submit and wait for the score;
when it stops, the message names the commands that finish the job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

from lorakit.console import ALLOW_SMOKE, JSON, command, err, flag, project_of, remote_new, seconds_check, warn
from lorakit.errors import ArgumentError, Interrupted, RemoteError
from lorakit.follow import kernel_failure_raise, kernel_status_wait
from lorakit.follow import log_shown, poll_lines
from lorakit.project import Project
from lorakit.pull import PullResult, kernel_output_pull
from lorakit.pull import pull_next, pull_show
from lorakit.push import PushOptions, PushResult, kernel_push
from lorakit.push import PUSH_FLAGS, push_options_of, push_show
from lorakit.remote import KernelStatus, Remote
from lorakit.remote_competitions import Submission
from lorakit.submit import SubmitResult, submission_create, submission_wait
from lorakit.submit import score_lines, scored_show, submitted_show

RUN_STEPS = {"push": "while pushing", "wait": "while waiting for the run", "pull": "while pulling",
             "submit": "while submitting", "score": "while waiting for the score"}


def run_resume(step: str, version: Optional[int], submit: bool) -> str:
    """The commands that finish a `lorakit run` interrupted at ``step`` (one of RUN_STEPS)."""
    if version is None:
        return "nothing was pushed; run it again"
    commands = {
        "wait": [f"lorakit status {version} --wait", f"lorakit pull {version}"],
        "pull": [f"lorakit pull {version}"],
        "submit": [],
        "score": ["lorakit scores"],
    }[step]
    if submit and step in ("wait", "pull", "submit"):
        commands.append(f"lorakit submit {version} --wait")
    return "resume with: " + ", then ".join(commands)


def _nothing(*_args) -> None:
    return None


@dataclass(frozen=True)
class RunOptions:
    """What `lorakit run` was asked: the push, then whether to submit, and how long to wait for each end."""

    push: PushOptions
    submit: bool = False
    timeout: float = 3600.0  # for the run
    score_timeout: float = 1800.0  # for the score
    allow_smoke: bool = False

    def __post_init__(self):
        if self.push.no_run:
            raise ArgumentError("lorakit run waits for the run it pushes; to save without running: lorakit push --no-run")
        for value, name in ((self.timeout, "--timeout"), (self.score_timeout, "--score-timeout")):
            seconds_check(value, name)


@dataclass(frozen=True)
class RunShow:
    """What the caller of run_pipeline hears as the steps go (the CLI prints it); nothing by default."""

    warn: Callable[[str], None] = _nothing  # kernel_push's warn
    pushed: Callable[[PushResult], None] = _nothing
    on_poll: Callable[[int, KernelStatus, float], None] = _nothing
    on_log: Optional[Callable[[str], None]] = None  # follow the run's log (kernel_status_wait)
    ran: Callable[[int, KernelStatus], None] = _nothing  # the run ended, failed or not
    on_wait: Callable[[str], None] = _nothing  # another pull of the version holds its lock
    pulled: Callable[[PullResult], None] = _nothing
    submitted: Callable[[SubmitResult], None] = _nothing
    on_score_poll: Callable[[Submission, float], None] = _nothing


@dataclass(frozen=True)
class RunResult:
    pushed: PushResult
    pulled: Optional[PullResult] = None  # None in a dry run
    submitted: Optional[SubmitResult] = None
    score: Optional[Submission] = None  # the scored submission (with --submit)


@dataclass
class RunAt:
    """Where a run pipeline is: its step (one of RUN_STEPS) and the version pushed (None before)."""

    step: str = "push"
    version: Optional[int] = None


def run_pipeline(project: Project, remote: Optional[Remote], options: RunOptions, show: RunShow = RunShow()) -> RunResult:
    """Push, wait for the run, pull its outputs and, with ``options.submit``, submit and wait for the score.

    The ledger is up to date at every step; when Ctrl-C or a Kaggle error stops it, the message says which
    commands finish the job from there (run_resume).
    """
    at = RunAt()
    try:
        return _run_steps(project, remote, options, show, at)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted {RUN_STEPS[at.step]}; the ledger is up to date; "
                          f"{run_resume(at.step, at.version, options.submit)}") from None
    except Interrupted as exc:
        if at.step == "push" and exc.version is not None:  # the push was recorded UNCONFIRMED
            raise Interrupted(f"{exc}; {run_resume('wait', exc.version, options.submit)}") from None
        raise
    except RemoteError as exc:
        if at.version is None:
            raise
        raise RemoteError(f"{exc}; {run_resume(at.step, at.version, options.submit)}", status=exc.status) from None


def _run_steps(project: Project, remote: Optional[Remote], options: RunOptions, show: RunShow, at: RunAt) -> RunResult:
    """run_pipeline's steps, each recorded in ``at`` as it starts."""
    push = replace(options.push, for_submission=options.submit and not options.allow_smoke,
                   submit_flag="--submit" if options.submit else options.push.submit_flag)
    pushed = kernel_push(project, remote, push, show.warn)
    show.pushed(pushed)
    if options.push.dry_run:
        return RunResult(pushed)
    at.step, at.version = "wait", pushed.version
    version, status = kernel_status_wait(project, remote, pushed.version, options.timeout, show.on_poll, show.on_log)
    show.ran(version, status)
    kernel_failure_raise(version, status)
    at.step = "pull"
    pulled = kernel_output_pull(project, remote, version, on_wait=show.on_wait)
    show.pulled(pulled)
    if not options.submit:
        return RunResult(pushed, pulled)
    at.step = "submit"
    submitted = submission_create(project, remote, version, None, options.allow_smoke, options.push.again)
    at.step = "score"  # submitted and recorded: only the score is left to read
    show.submitted(submitted)
    scored = submission_wait(project, remote, submitted.ref, submitted.version, options.score_timeout,
                             show.on_score_poll)
    return RunResult(pushed, pulled, submitted, scored)


# ------------------------------------------------------------------------------------- the command line
@command(
    "run",
    "push, wait for the run and pull its outputs in one go; --submit goes on to submit and wait for the score",
    *PUSH_FLAGS,
    flag("--submit", action="store_true", help="then submit submissions/v<N>/submission.csv and wait for the score"),
    flag("--follow", action="store_true", help="stream the run's log while waiting"),
    flag("--timeout", type=float, default=3600.0, metavar="S",
         help="give up waiting for the run after S seconds (default 3600); the run goes on on Kaggle (its end "
              "there is --session-timeout-minutes)"),
    flag("--score-timeout", type=float, default=1800.0, metavar="S",
         help="give up waiting for the score after S seconds (default 1800)"),
    ALLOW_SMOKE,
    JSON,
)
def cmd_run(args) -> int:
    out = args.out
    options = RunOptions(push_options_of(args), args.submit, args.timeout, args.score_timeout, args.allow_smoke)
    project = project_of(args)
    result = run_pipeline(project, None if options.push.dry_run else remote_new(), options, run_show(args, project))
    if result.pulled is None:  # a dry run
        out.document(out.partial)
        return 0
    if result.score is not None:
        scored_show(out, out.partial["submission"], result.score)
    out.partial.setdefault("submission", None)
    out.document(out.partial)
    step_next = "next: lorakit scores" if args.submit else pull_next(project, result.pulled)
    if step_next:
        out.progress(step_next)
    return 0


def run_show(args, project):
    """What `lorakit run` prints as its steps go, and the partial document each adds to."""

    out = args.out

    def pushed(result) -> None:
        push_show(out, project, result, hints=False)
        out.partial = {"version": result.version, "push": result.as_json()}

    def ran(_version, status) -> None:
        out.partial["status"] = status.as_json()

    def pulled(result) -> None:
        pull_show(out, project, result)
        out.partial["pull"] = result.as_json()

    return RunShow(warn=warn, pushed=pushed, on_poll=poll_lines(out.progress), on_log=log_shown(out, args.follow),
                   ran=ran, on_wait=lambda m: err(f"lorakit: {m}"), pulled=pulled,
                   submitted=lambda result: submitted_show(out, result), on_score_poll=score_lines(out))
