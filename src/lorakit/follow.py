"""`lorakit status` and `lorakit logs`: a version's status, waited for and recorded; its log, read or followed.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from lorakit.common import FAILED_KERNEL, TERMINAL_KERNEL, ledger_of, log_readable, predicted_on
from lorakit.console import JSON, Output, command, err, flag, hms, project_of, remote_new, seconds_check, warn
from lorakit.errors import NotFound, RemoteError, RunFailed, Timeout
from lorakit.inflight import version_target
from lorakit.ledger import Ledger
from lorakit.project import KernelRef, Project
from lorakit.remote import KernelStatus, Remote
from lorakit.retry import Poll, poll_until
from lorakit.transport import json_loads_safe


def kernel_status_get(project: Project, remote: Remote, version=None) -> tuple[int, KernelStatus]:
    version, ref = version_target(project, remote, version)
    status = remote.kernel_status_get(ref, version)
    status_record(ledger_of(project), version, status)
    environment_record(project, remote, ref, version, status)
    return version, status


def status_record(ledger: Ledger, version: int, status: KernelStatus) -> None:
    """v<N>'s row gets the status Kaggle named and its failure message, if any (a reply that named none, or a
    version without a row: nothing)."""
    if status.named and ledger.row(version) is not None:
        ledger.update(version, status=status.status, failure_message=status.failure_message or None)


def environment_record(project: Project, remote: Remote, ref: KernelRef, version: int, status: KernelStatus) -> None:
    """v<N>'s docker_image and machine_shape once its run has ended, from GetKernel: Kaggle describes only the
    kernel's latest session, so only while v<N> is the newest version; once, and never at the cost of the
    command (a failed read records nothing)."""
    if status.status not in TERMINAL_KERNEL or status.status == "NEW_SCRIPT":
        return
    ledger = ledger_of(project)
    row = ledger.row(version)
    if row is None or row.get("docker_image") or row.get("machine_shape"):
        return
    try:
        latest = remote.kernel_latest_get(ref)
    except RemoteError:
        return
    if latest.version == version and (latest.docker_image or latest.machine_shape):
        ledger.update(version, docker_image=latest.docker_image, machine_shape=latest.machine_shape)


class LogFollower:
    """Hands each piece of a run's log to ``on_log`` once: from the live stream while the run goes on, then the
    rest of the stored log once it has ended. When the stream is unavailable (a 404, or it keeps dropping) it
    says so in one line and falls back to the stored log, read once the run has ended."""

    def __init__(self, remote: Remote, ref: KernelRef, version: int, on_log: Callable[[str], None],
                 deadline: Optional[float]):
        self.remote, self.ref, self.version, self.on_log = remote, ref, version, on_log
        self.deadline = deadline  # a time.monotonic() the stream never waits past; None: none
        self.shown = 0  # log events handed on so far
        self.streaming = True

    def _event(self, event: dict) -> None:
        self.shown += 1  # counted here: a stream that fails half way has handed these on all the same
        text = event.get("data")
        if text is not None:
            self.on_log(str(text) if str(text).endswith("\n") else f"{text}\n")

    def _stream(self, deadline: Optional[float]) -> None:
        try:
            self.remote.kernel_log_stream(self.ref, self.version, self._event, self.shown, deadline)
        except RemoteError as exc:
            self.streaming = False
            print(f"lorakit: note: the log stream of v{self.version} is unavailable ({exc}); following its "
                  "status instead, the log comes once the run has ended", file=self.remote.log)

    def live(self, status: KernelStatus) -> bool:
        """Whether the stream waits for the next status read (instead of a sleep): while the run runs."""
        return self.streaming and status.status == "RUNNING"

    def follow(self) -> bool:
        """Stream while the run goes on (until the stream ends or the deadline); whether new lines came."""
        before = self.shown
        if self.streaming:
            self._stream(self.deadline)
        return self.shown > before

    def finish(self) -> None:
        """The stored log past what was shown: through the stream, else from the version's output listing."""
        if self.streaming:
            self._stream(None)
            if self.streaming:
                return
        _, raw = self.remote.kernel_output_list(self.ref, self.version)
        events = json_loads_safe(raw)
        if isinstance(events, list):
            for event in events[self.shown:]:
                self._event(event if isinstance(event, dict) else {})
        elif raw and not self.shown:
            self.on_log(log_readable(raw))


def kernel_status_wait(
    project: Project,
    remote: Remote,
    version=None,
    timeout: float = 3600.0,
    on_poll: Callable[[int, KernelStatus, float], None] = lambda *_: None,
    on_log: Optional[Callable[[str], None]] = None,
) -> tuple[int, KernelStatus]:
    """Poll v<N>'s status until the run ends (or ``timeout`` seconds pass: Timeout), recording each change.

    With ``on_log``, the run's log is followed instead of sleeping while it runs, and read to its end once it
    has ended; ``on_log`` gets each piece of text once (see LogFollower).
    """
    seconds_check(timeout, "--timeout")
    version, ref = version_target(project, remote, version)
    ledger = ledger_of(project)
    deadline = time.monotonic() + timeout
    log = LogFollower(remote, ref, version, on_log, deadline) if on_log is not None else None
    recorded: list = [None]

    def seen(status: KernelStatus, elapsed: float) -> bool:
        if status != recorded[-1]:
            status_record(ledger, version, status)
            recorded.append(status)
        on_poll(version, status, elapsed)
        if status.status in TERMINAL_KERNEL:
            environment_record(project, remote, ref, version, status)
        if status.status in TERMINAL_KERNEL and log is not None:
            log.finish()
        return status.status in TERMINAL_KERNEL

    def stalled(status: KernelStatus, elapsed: float) -> Timeout:
        return Timeout(f"v{version} is still {status.status} after {elapsed:.0f} s; run lorakit status {version} "
                       "--wait again")

    status = poll_until(lambda: remote.kernel_status_get(ref, version), seen, Poll.of(remote.policy, timeout),
                        stalled, log)
    return version, status


def kernel_failure_raise(version: int, status: KernelStatus) -> None:
    if status.status in FAILED_KERNEL:
        message = status.failure_message or "no failure message; see lorakit logs"
        raise RunFailed(f"v{version} ended {status.status}: {message}")


def kernel_log_get(project: Project, remote: Remote, version=None) -> tuple[int, str]:
    version, ref = version_target(project, remote, version)
    _, raw = remote.kernel_output_list(ref, version)
    if not raw:
        raise NotFound(f"Kaggle has no log for v{version} yet")
    return version, log_readable(raw)


# ------------------------------------------------------------------------------------- the command line
def poll_lines(emit: Callable[[str], None], changes_only: bool = False):
    """``emit`` the status line of each poll (of each change only, for a log follower)."""
    seen = []

    def on_poll(version, status, elapsed):
        if not changes_only or seen[-1:] != [status.status]:
            emit(f"[{hms(elapsed)}] v{version} {status.shown}")
        seen.append(status.status)

    return on_poll


def _status_wait(args, project, remote, version, timeout: float, follow: bool):
    """Wait for v<N>'s run to end (streaming its log with ``follow``); (version, status) once it has."""

    out = args.out
    return kernel_status_wait(project, remote, version, timeout, poll_lines(out.progress), log_shown(out, follow))


def log_shown(out: Output, follow: bool) -> Optional[Callable[[str], None]]:
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
    out = args.out
    seconds_check(args.timeout, "--timeout")  # with --wait or not: no command takes an unbounded wait
    project = project_of(args)
    if args.wait or args.follow:  # kernel_status_wait checks --timeout before any call
        version, status = _status_wait(args, project, remote_new(), args.version, args.timeout, args.follow)
    else:
        version, status = kernel_status_get(project, remote_new(), args.version)
        out.result(f"v{version} {status.shown}")
    problem = (ledger_of(project).row(version) or {}).get("push_problem") or ""
    out.partial = {"version": version, **status.as_json(), "push_problem": problem or None}
    if problem:
        warn(f"v{version} is marked: Kaggle's reply to its push said {problem}")
    if status.failure_message:
        out.result(f"failure message: {status.failure_message}")
    kernel_failure_raise(version, status)
    out.document(out.partial)
    step_next = status_next(project, version) if status.status == "COMPLETE" else None
    if step_next:
        out.progress(step_next)
    return 0


def status_next(project, version: int) -> Optional[str]:
    """The step after a COMPLETE run, as far as the ledger and the pulled folder say: pull it, else submit it
    (a real run's valid file, not submitted yet), else read its score; nothing for a smoke run's."""
    if not project.version_dir(version).is_dir():
        return f"next: lorakit pull {version}"
    row = ledger_of(project).row(version) or {}
    if row.get("submission_ref"):
        return "next: lorakit scores"
    real = predicted_on(project, version, row)[0] in ("competition", None)
    has_file = (project.version_dir(version) / "submission.csv").is_file()
    return f"next: lorakit submit {version} --wait" if real and has_file else None


@command(
    "logs",
    "the run's log as text (default: the newest version); --follow streams it while the run goes on",
    flag("version", nargs="?", help="kernel version number"),
    flag("--follow", action="store_true",
         help="stream the log until the run ends (exit 3 when it ends in ERROR); status changes go to stderr"),
    flag("--timeout", type=float, default=3600.0, metavar="S",
         help="with --follow, give up after S seconds (default 3600; exit 4)"),
    JSON,
)
def cmd_logs(args) -> int:
    out = args.out
    seconds_check(args.timeout, "--timeout")
    project = project_of(args)
    if not args.follow:
        version, text = kernel_log_get(project, remote_new(), args.version)
        out.document({"version": version, "log": text})
        out.text(text)
        return 0
    pieces: list = []

    def on_log(text: str) -> None:  # the log alone on stdout (stderr under --json), status changes on stderr
        pieces.append(text)
        out.progress(text, end="")

    version, status = kernel_status_wait(
        project, remote_new(), args.version, args.timeout, poll_lines(lambda text: err(f"lorakit: {text}"), changes_only=True),
        on_log,
    )
    out.partial = {"version": version, **status.as_json(), "log": "".join(pieces)}
    kernel_failure_raise(version, status)
    out.document(out.partial)
    return 0
