"""`lorakit validate` and `lorakit submit`: the kernel's submission rules, then a submission recorded before it
is sent, and its score waited for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lorakit.common import (
    UNCONFIRMED, failure_text, kernel_ref_resolve, ledger_of, metrics_read, predicted_on, rows_expected_of,
    submission_columns, submission_description, text_checked, token_new, utc_now, version_parse,
)
from lorakit.console import (
    ALLOW_SMOKE, JSON, Output, command, flag, fmt, hms, note, project_of, remote_new, seconds_check,
)
from lorakit.errors import (
    ArgumentError, FlagNeeded, LedgerError, NotFound, Refused, RemoteError, RunFailed, Timeout, Unconfirmed, UsageError,
)
from lorakit.kernel import submission_check
from lorakit.inflight import (
    UNSETTLED, refused_by_kaggle, send_over, sending, submission_claim, submission_duplicate_check,
    submission_recorded, submission_settle, unsure_error,
)
from lorakit.ledger import Ledger
from lorakit.preflight import kaggle_refusal, submission_preflight
from lorakit.project import Project
from lorakit.project import repo_found
from lorakit.remote import Remote
from lorakit.remote_competitions import Submission
from lorakit.retry import Poll, poll_until


def submission_validate(project: Optional[Project], path: Path, rows: Optional[int] = None) -> int:
    """The kernel's submission rules on ``path`` (the project's kernel, else the one lorakit ships); its rows:
    ``rows``, else what the metrics.json beside it says (rows_expected_of)."""
    if not rows:
        folder = Path(path).parent
        try:
            metrics = metrics_read(folder) if folder.is_dir() else None
        except UsageError:
            metrics = None  # a cut-short metrics.json must not stand in the way of a valid submission
    rows = int(rows) if rows else rows_expected_of(metrics)
    if rows < 1:
        raise ArgumentError("--rows must be positive")
    submission_check(project, Path(path), rows)
    return rows


@dataclass(frozen=True)
class SubmitResult:
    version: int
    ref: int
    remaining: Optional[int]  # submissions left today, read after this one; None when that read failed
    notes: tuple = ()

    def as_json(self) -> dict:
        return {"version": self.version, "ref": self.ref, "remaining_today": self.remaining, "notes": list(self.notes)}


def submission_wait(
    project: Project,
    remote: Remote,
    ref: int,
    version: Optional[int],
    timeout: float,
    on_poll: Callable[[Submission, float], None] = lambda *_: None,
) -> Submission:
    """Poll submission ``ref`` until it is scored (or ``timeout`` seconds pass: Timeout); v<N>'s ledger row
    gets its status and scores."""
    poll = Poll.of(remote.policy, timeout)
    start = poll.timing.now()

    def read() -> Submission:
        try:
            return remote.submission_get(ref, project.competition)
        except RemoteError as exc:
            if exc.status != 404 or poll.timing.now() - start > timeout:  # a fresh one may not be readable yet
                raise
            return Submission(ref, "PENDING", None, None, "", "")

    def seen(sub: Submission, elapsed: float) -> bool:
        on_poll(sub, elapsed)
        if sub.status not in ("COMPLETE", "ERROR"):
            return False
        if version is not None:
            ledger_of(project).update(version, **submission_columns(sub))
        if sub.status == "ERROR":
            raise RunFailed(f"submission {ref} failed to score: {sub.error or 'no error message'}")
        return True

    def stalled(sub: Submission, elapsed: float) -> Timeout:
        return Timeout(f"submission {ref} is still {sub.status} after {elapsed:.0f} s; see lorakit scores later")

    return poll_until(read, seen, poll, stalled)


def real_run_check(project: Project, version: int, row: dict, allow_smoke: bool) -> list:
    """Refuse (FlagNeeded) to submit a run that did not predict the competition's own test file, unless
    ``allow_smoke``; the notes to show otherwise."""
    kind, words = predicted_on(project, version, row)
    if kind == "competition":
        return []
    if kind is None:
        return [f"cannot tell what v{version} predicted on ({words}); submitting it"]
    if allow_smoke:
        return [f"v{version} predicted on {words}, not the competition's test file: submitted as --allow-smoke asks"]
    raise FlagNeeded(f"v{version} predicted on {words}, not the competition's test file: nothing submitted "
                     "(--allow-smoke submits it anyway, to exercise the loop against a stand-in)")


def submission_create(project: Project, remote: Remote, version, message: Optional[str] = None,
                      allow_smoke: bool = False, again: bool = False) -> SubmitResult:
    """Submit v<N>'s pulled submission.csv, recorded before it is sent; a version already submitted (pending
    or scored) only with ``again``, and never while another submission of it is unsettled."""
    version = version_parse(version)
    text_checked(message or "", "-m")
    folder = project.version_dir(version)
    path = folder / "submission.csv"
    ledger = ledger_of(project)
    recorded = ledger.row(version) or {}
    failure = failure_text(recorded)
    if not path.is_file():
        raise NotFound(_missing_submission(project, version, failure))
    submission_validate(project, path)  # the kernel's rules, before any network call
    ledger.check_writable()
    notes = real_run_check(project, version, recorded, allow_smoke)
    if failure:
        notes.append(f"{failure}, but its submission.csv passed the kernel's checks: submitting it")
    if recorded.get("submission_status") == UNCONFIRMED:  # written by older lorakit
        raise Refused(
            f"v{version}'s last submission is {UNCONFIRMED}: run lorakit scores to find out whether it reached "
            "Kaggle before submitting again"
        )
    kernel = kernel_ref_resolve(project, remote)
    ledger = ledger_of(project, kernel)
    row = ledger.row(version) or {}
    if row.get("pending_status") in UNSETTLED:
        earlier = submission_settle(project, remote, ledger, version, row)
        if earlier is not None:
            notes.append(f"v{version}'s earlier submission (its reply lost) reached Kaggle as {earlier.ref}: "
                         "recorded, not sent again")
            return SubmitResult(version, earlier.ref, submissions_left(project, remote, notes), tuple(notes))
        row = ledger.row(version) or {}
    submission_duplicate_check(row, version, again)  # before any upload; again under the lock, when recorded
    token = token_new()
    description = submission_description(kernel, version, row.get("config_hash", ""), token,
                                         message or row.get("message") or "")
    submission_preflight(remote, project.competition, notes)  # rules accepted, submissions open
    limits = remote.submission_limits_get(project.competition)
    if int(getattr(limits, "num_allowed_now", 0) or 0) <= 0:
        used = int(getattr(limits, "num_today", 0) or 0)
        raise Refused(
            f"no submissions left today for {project.competition} ({used} used); try again after the daily reset "
            f"(if you have not joined, accept the rules at https://www.kaggle.com/competitions/{project.competition}/rules)"
        )
    with sending(token):
        ref, recovered = _submission_send(project, remote, ledger, Outgoing(version, path, description, token, again))
    if recovered:
        notes.append(f"Kaggle's reply to the submission was lost, but it went through as {ref}: not sent again")
    return SubmitResult(version, ref, submissions_left(project, remote, notes), tuple(notes))


def _missing_submission(project: Project, version: int, failure: str) -> str:
    """Why v<N> has no submission.csv to submit, and what to do: pull it, unless its run failed."""
    shown = (project.version_dir(version) / "submission.csv").relative_to(project.root)
    if not failure:
        return f"{shown} does not exist; run lorakit pull {version} first"
    if project.version_dir(version).is_dir():
        return f"{failure}: its run left no submission.csv (its log: lorakit logs {version})"
    return f"{failure}: it has no submission to submit (its log: lorakit logs {version})"


@dataclass(frozen=True)
class Outgoing:
    """A submission about to be sent: v<N>'s file, its description and the token the description holds."""

    version: int
    path: Path
    description: str
    token: str
    again: bool = False  # sent even when the version is already submitted


def _submission_send(project: Project, remote: Remote, ledger: Ledger, outgoing: Outgoing) -> tuple:
    """Record the submission as pending (SENDING, naming this process) before it leaves, send it, then record
    it; (ref, recovered). The previous submission's columns stay until the new one is known."""
    version, path, description, token = outgoing.version, outgoing.path, outgoing.description, outgoing.token
    submission_claim(ledger, version, token, outgoing.again, remote.policy)  # or nothing is sent
    try:
        ref, recovered = remote.submission_create(path, description, project.competition, token)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        ledger.update(version, pending_status=UNCONFIRMED, **send_over())
        advice = f"recorded v{version}'s submission as {UNCONFIRMED}: run lorakit scores to find out before submitting again"
        raise unsure_error(exc, "submitting", advice, version) from None
    except RemoteError as exc:
        if refused_by_kaggle(exc):
            ledger.update(version, pending_token="", pending_status="")
            raise kaggle_refusal(f"the submission of v{version}", exc.detail, exc.status, project.competition) or exc
        raise
    try:
        submission_recorded(ledger, version, Submission(ref, "PENDING", None, None, description, utc_now()), token)
    except (OSError, LedgerError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"submitted v{version} as submission {ref}, but the ledger could not be updated ({reason}): "
                          "lorakit scores records it by its token; do not submit it again") from None
    return ref, recovered


def submissions_left(project: Project, remote: Remote, notes: list) -> Optional[int]:
    try:
        return int(getattr(remote.submission_limits_get(project.competition), "num_allowed_now", 0) or 0)
    except RemoteError as exc:
        notes.append(f"could not read the submissions left today: {exc}")
        return None


# ------------------------------------------------------------------------------------- the command line
def submitted_show(out: Output, result) -> dict:
    """Show a submission just made; what it did, as JSON (also the partial document, should the wait fail)."""
    for line in result.notes:
        note(line)
    left = "left today unknown" if result.remaining is None else f"{result.remaining} left today"
    out.progress(f"submitted v{result.version} as submission {result.ref} ({left})")
    data = {**result.as_json(), "score": None}
    out.partial["submission"] = data
    return data


def score_lines(out: Output):
    """The line of each poll of a submission's score."""

    def on_poll(sub, elapsed):
        out.progress(f"[{hms(elapsed)}] submission {sub.ref} {sub.status}")

    return on_poll


def scored_show(out: Output, data: dict, scored) -> None:
    out.progress(f"scored: public {fmt(scored.public_score, 5)} | private {fmt(scored.private_score, 5)}")
    data["score"] = scored.as_json()


@command(
    "submit",
    "validate and submit submissions/v<N>/submission.csv",
    flag("version", help="kernel version number"),
    flag("-m", "--message", help="submission description (default: the push message)"),
    flag("--wait", action="store_true", help="poll until the submission is scored"),
    flag("--timeout", type=float, default=1800.0, metavar="S", help="give up waiting after S seconds (default 1800)"),
    ALLOW_SMOKE,
    flag("--again", action="store_true",
         help="submit even a version already submitted (pending or scored); never while one is in flight"),
    JSON,
)
def cmd_submit(args) -> int:
    out = args.out
    seconds_check(args.timeout, "--timeout")  # before submitting: a bad --timeout must not cost a submission
    project, remote = project_of(args), remote_new()
    result = submission_create(project, remote, args.version, args.message, args.allow_smoke, args.again)
    data = submitted_show(out, result)
    if args.wait:
        scored = submission_wait(project, remote, result.ref, result.version, args.timeout, score_lines(out))
        scored_show(out, data, scored)
    out.document(data)
    out.progress("next: lorakit scores")
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


    project = project_of(args) if repo_found(args.repo) else None  # outside a checkout: the kernel lorakit ships
    args.out.partial = {"file": args.file, "valid": False}
    rows = submission_validate(project, Path(args.file), args.rows)
    args.out.document({"file": args.file, "valid": True, "rows": rows})
    args.out.result(f"{args.file}: valid submission ({rows} rows, columns ID,Label, labels 0-3)")
    return 0
