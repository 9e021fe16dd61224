"""Sends that may or may not have reached Kaggle: a push recorded SENDING or left UNCONFIRMED, a submission
pending (SENDING or UNCONFIRMED). Each row names its sender (lorakit.processes: host, pid, start time), when
it was sent and when its send is over whatever happens (``send_ends``). Every command that acts on versions or
sends settles them first, the same way:

- while the sender lives (on another machine, whose processes cannot be seen: until ``send_ends``), the send
  is in flight: no other command settles it; they say so and leave it;
- otherwise it is looked for on Kaggle by its token (a push among the kernel's versions above ``sent_after``, a
  submission among mine): found, its row records what it became;
- not found, it is "not found yet" until LORAKIT_CONFIRM_S after its send is over (a dead sender's send is over
  when a command first sees it dead: a request it sent may still be on Kaggle's side), and later commands look
  again; only then is it NOT_PUSHED or NOT_SUBMITTED, and may be sent again.

The guards against duplicates stand on that: a config whose push may have reached Kaggle is not pushed again,
a version already submitted is not submitted again, without --again; and a send is recorded under the
ledger's lock after the same check, so that two commands at once never both send it. Two submissions of one
version are never in flight at once, --again or not.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator, Optional

from lorakit.common import (
    NOT_PUSHED, NOT_SUBMITTED, UNCONFIRMED, kernel_ref_resolve, ledger_of, submission_columns, utc_now, version_parse,
)
from lorakit.console import note
from lorakit.errors import (
    FlagNeeded, Interrupted, LorakitError, NotFound, Refused, RemoteError, Unconfirmed, UsageError,
)
from lorakit.ledger import SENDING, Ledger
from lorakit.processes import ALIVE, UNKNOWN, sender_is_me, sender_name, sender_state, sender_words
from lorakit.project import KernelRef, Project
from lorakit.remote import Remote
from lorakit.remote_competitions import Submission
from lorakit.retry import RetryPolicy
from lorakit.stats import finite_number

UNSETTLED = (SENDING, UNCONFIRMED)
MAY_HAVE_RUN = (*UNSETTLED, "QUEUED", "RUNNING", "COMPLETE")  # a push of the same config again needs --again
SUBMITTED = ("PENDING", "COMPLETE")  # a submission of the same version again needs --again


# ------------------------------------------------------------------------------------------- the rule
def _moment(text) -> Optional[datetime]:
    try:
        moment = datetime.fromisoformat(str(text or "").strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def send_fields(policy: RetryPolicy, calls: int = 1) -> dict:
    """The cells naming this process the sender of a send that starts now and is over within ``calls`` calls,
    each bounded by LORAKIT_RETRY_TOTAL_S."""
    now = _now()
    return {"sender": sender_name(), "sent_at": _iso(now),
            "send_ends": _iso(now + timedelta(seconds=calls * policy.total_time))}


_SENDING_HERE: set = set()  # the tokens this process is sending now (a sender may check its own rows)
_SENDING_LOCK = threading.Lock()


@contextlib.contextmanager
def sending(token: str) -> Iterator[None]:
    """While this process sends the push or submission marked ``token``: its own later checks see it in flight."""
    with _SENDING_LOCK:
        _SENDING_HERE.add(token)
    try:
        yield
    finally:
        with _SENDING_LOCK:
            _SENDING_HERE.discard(token)


def _sending(row: dict, token: str, ends: Optional[datetime], now: datetime) -> bool:
    """Whether the row's sender may still be sending it: this process while it does, another one here while
    it lives, one whose life cannot be seen (another machine) until ``ends``."""
    if sender_is_me(row.get("sender")):
        with _SENDING_LOCK:
            return token in _SENDING_HERE
    state = sender_state(row.get("sender"))
    return state == ALIVE or (state == UNKNOWN and ends is not None and now < ends)


def send_over() -> dict:
    """The cells of a send its sender stopped (a reply lost, a signal): over now."""
    return {"send_ends": utc_now()}


def unsure_error(exc: BaseException, doing: str, advice: str, version: int) -> LorakitError:
    """What a send that may have gone through ends with, the advice on finding out either way: Interrupted
    after Ctrl-C, Unconfirmed when the reply was lost."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted while {doing}; {advice}", version)
    return Unconfirmed(f"{exc}; {advice}")


def refused_by_kaggle(exc: RemoteError) -> bool:
    """Kaggle answered 4xx: it refused the send, so nothing was made."""
    return exc.status is not None and 400 <= exc.status < 500


@dataclass(frozen=True)
class Unsettled:
    """What the ledger alone tells of an unsettled send, and what not finding it on Kaggle now would mean."""

    flying: str  # who may still be sending it ("process 1234"); "" when nobody can be
    final: bool  # not found now, it never arrived (else it is only not found *yet*)
    until: datetime  # when not finding it becomes final
    fields: dict = field(default_factory=dict)  # cells to record when it is not found (send_ends, a sender seen dead)


def unsettled_of(row: dict, status: str, token: str, grace: float) -> Unsettled:
    """The send of ``row`` marked ``token``, in ``status`` (SENDING: maybe in flight; UNCONFIRMED: its sender
    gave up), as the module's rule reads it; ``grace`` is LORAKIT_CONFIRM_S."""
    now = _now()
    ends = _moment(row.get("send_ends"))
    if status == SENDING and _sending(row, token, ends, now):
        return Unsettled(sender_words(row.get("sender")), False, ends or now)
    fields = {}
    if ends is None or ends > now:  # none recorded (an older lorakit's row), or its sender died first
        ends, fields = now, {"send_ends": _iso(now)}
    until = ends + timedelta(seconds=grace)
    return Unsettled("", now >= until, until, fields)


def unsettled_words(row: dict, status: str, what: str, grace: float) -> str:
    """"is being pushed by process 1234 (sent ...)" or "was sent ... and is not found on Kaggle yet (...)"."""
    token = row.get("pending_token") if what == "submitted" else row.get("push_token")
    state = unsettled_of(row, status, token or "", grace)
    sent = f"sent {row.get('sent_at') or row.get('pushed_at') or 'at an unknown time'}"
    if state.flying:
        return f"is being {what} by {state.flying} ({sent})"
    return (f"was {sent} and is not found on Kaggle yet ({status}); lorakit looks again until "
            f"{_iso(state.until)}")


def _grace() -> float:
    return RetryPolicy.from_env().confirm_time


# -------------------------------------------------------------------------------------------- pushes
@dataclass
class Settling:
    """What settling a kernel's pushes found: the rows that went through (with their version and status), those
    found never to have arrived (NOT_PUSHED now), those in flight or not found yet (left as they are), and the
    UNCONFIRMED ones that went through under another number (recorded version -> real one)."""

    found: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    flying: list = field(default_factory=list)  # (row, words)
    waiting: list = field(default_factory=list)  # (row, words)
    moved: dict = field(default_factory=dict)

    def notes(self) -> list:
        found = [f"a push left {r['was']} went through as v{r['version']}" for r in self.found]
        return found + [f"a push of config_hash {r.get('config_hash', '')[:12]} {words}"
                        for r, words in (*self.flying, *self.waiting)]


def pushes_settle(project: Project, remote: Remote, ref: KernelRef) -> Settling:
    """Settle this kernel's pushes left SENDING or UNCONFIRMED, as the module's rule says; what it found."""
    ledger = ledger_of(project, ref)
    rows = [r for r in (*ledger.provisional(), *ledger.rows()) if r.get("status") in UNSETTLED and r.get("push_token")]
    settling = Settling()
    for row in rows:
        status, grace = row["status"], remote.policy.confirm_time
        state = unsettled_of(row, status, row["push_token"], grace)
        if state.flying:
            settling.flying.append((row, unsettled_words(row, status, "pushed", grace)))
            continue
        guess = int(finite_number(row.get("version")) or 0)  # what an UNCONFIRMED push was recorded as
        after = int(finite_number(row.get("sent_after")) or max(guess - 1, 0))
        found = remote.kernel_version_of_token(ref, row["push_token"], after)
        if found is not None:  # numbered, and QUEUED as a fresh push is: the next status read says more
            ledger.settle(row["push_token"], found, only_if=status, status="QUEUED")  # a no-op once its sender did
            settling.found.append({**row, "version": str(found), "status": "QUEUED", "was": status})
            if guess and found != guess:
                settling.moved[guess] = found
        elif state.final:
            ledger.settle(row["push_token"], None, only_if=status, status=NOT_PUSHED, **state.fields)
            settling.lost.append(row)
        else:
            if state.fields:
                ledger.settle(row["push_token"], None, only_if=status, **state.fields)
            settling.waiting.append((row, unsettled_words({**row, **state.fields}, status, "pushed", grace)))
    return settling


def _duplicate_words(row: dict, config_hash: str) -> str:
    if row.get("status") in UNSETTLED:
        return f"a push of config_hash {config_hash[:12]} {unsettled_words(row, row['status'], 'pushed', _grace())}"
    return f"v{row['version']} already ran config_hash {config_hash[:12]} ({row['status']})"


def push_duplicate_check(rows: list, config_hash: str) -> None:
    """A push of a config whose push among ``rows`` may have reached Kaggle (in flight, not settled yet,
    queued, running or complete) may spend a GPU run twice: it asks for --again. Rows settled first."""
    same = [r for r in rows if r.get("config_hash") == config_hash and r.get("status") in MAY_HAVE_RUN]
    if same:
        row = max(same, key=lambda r: (r.get("status") == "COMPLETE", r.get("status") not in UNSETTLED))
        later = f"see lorakit status {row['version']}" if row.get("version") else "lorakit status settles it"
        raise FlagNeeded(f"{_duplicate_words(row, config_hash)}: nothing pushed; {later}, or push it again with "
                         "--again")


def push_claim(ledger: Ledger, token: str, again: bool, **fields) -> None:
    """Record a push about to be sent (SENDING, naming this process), under the ledger's lock and after the
    duplicate check on the rows as they are then (unless ``again``): of two pushes at once, one is refused."""
    check = None if again else (lambda rows: push_duplicate_check(rows, fields.get("config_hash", "")))
    ledger.add_provisional(token, check, status=SENDING, **fields)


def version_resolve(project: Project, version, settling: Settling) -> int:
    """The version named, else the newest in the ledger (NotFound naming the pushes still unsettled)."""
    if version is not None:
        return version_parse(version)
    try:
        return ledger_of(project).latest_version()
    except NotFound as exc:
        if settling.flying or settling.waiting:
            raise NotFound(f"{exc}; " + "; ".join(settling.notes())) from None
        raise


def version_target(project: Project, remote: Remote, version) -> tuple[int, KernelRef]:
    """The version a command acts on (the one named, else the newest in the ledger) and its kernel (--kernel,
    else the metadata's), once the pushes left unsettled are settled. Raises when that version's own push
    turned out to be another version, never to have arrived, or is not found yet."""
    ref = kernel_ref_resolve(project, remote)
    settling = pushes_settle(project, remote, ref)
    number = version_resolve(project, version, settling)
    if number in settling.moved:
        found = settling.moved[number]
        raise UsageError(f"the push recorded as v{number} went through as v{found} (another push took v{number}); "
                         f"the ledger now says so: lorakit status {found}")
    if any(r.get("version") == str(number) for r in settling.lost):
        raise UsageError(f"the push recorded as v{number} never reached Kaggle ({ref} has no version with its "
                         "token); push it again")
    mine = [words for r, words in settling.waiting if r.get("version") == str(number)]
    if mine:
        raise Unconfirmed(f"the push recorded as v{number} {mine[0]}; run the command again then")
    for line in settling.notes():
        note(line)
    return number, ref


def push_unsettled_words(row: dict) -> str:
    """Why a push row left SENDING or UNCONFIRMED cannot be acted on yet: "is being pushed by ...", "was
    sent ... and is not found on Kaggle yet ..."."""
    return unsettled_words(row, row.get("status") or SENDING, "pushed", _grace())


# ----------------------------------------------------------------------------------------- submissions
def submission_recorded(ledger: Ledger, version: int, sub: Submission, token: str) -> None:
    """Make ``sub`` v<N>'s submission: the previous one's columns are replaced only now, once it is known."""
    ledger.update(version, **submission_columns(sub), submission_token=token, submitted_at=sub.date or utc_now(),
                  pending_token="", pending_status="")


def _pending_update(ledger: Ledger, version: int, token: str, **fields) -> None:
    """Update v<N>'s pending submission, only while it is still the one of ``token``."""
    with ledger.transaction() as records:
        for record in records:
            if ledger.owns(record) and record["version"] == str(version) and record.get("pending_token") == token:
                record.update({k: str(v) for k, v in fields.items()})


def submission_settle(project: Project, remote: Remote, ledger: Ledger, version: int,
                      row: dict) -> Optional[Submission]:
    """v<N>'s pending submission (SENDING or UNCONFIRMED), as the module's rule settles it: the submission its
    token finds among mine (then recorded); None when it is in flight, not found yet (both left as they are)
    or found never to have arrived (NOT_SUBMITTED now)."""
    status, token = row.get("pending_status", ""), row.get("pending_token", "")
    state = unsettled_of(row, status, token, remote.policy.confirm_time)
    if state.flying:
        return None
    found = next((s for s in remote.submissions_list(project.competition) if token and token in s.description), None)
    if found is not None:
        submission_recorded(ledger, version, found, token)
    elif state.final:
        _pending_update(ledger, version, token, pending_status=NOT_SUBMITTED, **state.fields)
    elif state.fields:
        _pending_update(ledger, version, token, **state.fields)
    return found


def submission_duplicate_check(row: dict, version: int, again: bool) -> None:
    """Refuse a submission of v<N> while another one of it is unsettled (--again or not), and a second one of
    a version already submitted (pending or scored) without ``again``."""
    pending = row.get("pending_status")
    if pending in UNSETTLED:
        raise Refused(f"a submission of v{version} {unsettled_words(row, pending, 'submitted', _grace())}: nothing "
                      "submitted; lorakit scores records it once it is known")
    if not again and row.get("submission_ref") and row.get("submission_status") in SUBMITTED:
        score = f", public {row['public_score']}" if row.get("public_score") else ""
        raise FlagNeeded(f"v{version} is already submitted (submission {row['submission_ref']}, "
                         f"{row['submission_status']}{score}): nothing submitted; see lorakit scores, or submit it "
                         "again with --again")


def submission_claim(ledger: Ledger, version: int, token: str, again: bool, policy: RetryPolicy) -> None:
    """Record v<N>'s submission as pending (SENDING, naming this process) under the ledger's lock, after the
    duplicate check on its row as it is then: of two submissions at once, one is refused."""
    with ledger.transaction() as records:
        record = next((r for r in records if ledger.owns(r) and r["version"] == str(version)), None)
        if record is None:
            record = {"version": str(version), "kernel_ref": ledger.kernel}
            records.append(record)
        submission_duplicate_check(record, version, again)
        # three calls: the upload's start, the upload, CreateSubmission
        record.update(pending_token=token, pending_status=SENDING, **send_fields(policy, calls=3))
