"""`lorakit sweep --parallel N`: up to N arms on Kaggle at once, the next pushed while earlier ones run; and the
wait for a GPU session when Kaggle answers "Maximum batch GPU session count of N reached".

Kaggle documents no number of GPU sessions one account may hold at once (users report two); its refusal quotes
it, so the lanes learn the limit from the refusal and never ask for more. A push refused so is no failed arm:
it waits, with a line saying so, and is sent again once a session is free (one of the sweep's runs ended; or,
when runs outside the sweep hold them, at the next poll), for at most the sweep's --timeout. One process, one
Kaggle connection: the lanes take turns, reading each running arm's status once per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

from lorakit.errors import KaggleRefused, Timeout
from lorakit.retry import Poll

T = TypeVar("T")


@dataclass(frozen=True)
class Lanes:
    """What the lanes do with each arm, from the sweep: ``done(arm)`` its outcome when it needs nothing more
    (else None); ``pushed(arm)`` its version when it was pushed before (else None); ``push(arm)`` sends it and
    returns its version; ``ended(arm, version)`` reads its status once: whether its run ended; ``finish(arm,
    version)`` its outcome once it ended (pulled, or failed)."""

    done: Callable
    pushed: Callable
    push: Callable
    ended: Callable
    finish: Callable


def session_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Kaggle's "Maximum batch GPU session count of N reached": no failed arm, a wait."""
    return isinstance(exc, KaggleRefused) and exc.kind == "session_count"


def session_wait_line(label: str, exc: KaggleRefused, mine: int, timeout: float) -> str:
    """The line a sweep says when an arm waits for a GPU session."""
    allowed = f"Kaggle allows {exc.limit} at once" if exc.limit else "Kaggle allows no more at once"
    held = f"{mine} held by this sweep" if mine else "held by runs outside this sweep"
    return (f"{label} waits for a GPU session: {allowed} ({held}); it is sent again once one is free, for up to "
            f"{timeout:g} s")


def _session_timeout(label: str, exc: KaggleRefused, waited: float) -> Timeout:
    return Timeout(f"{label} waited {waited:.0f} s for a GPU session and Kaggle still refuses it ({exc}); nothing "
                   "pushed for it")


def session_waited(send: Callable[[], T], label: str, poll: Poll, say: Callable[[str], None]) -> T:
    """``send()`` (a push), sent again while Kaggle refuses it for the GPU session count, every poll interval
    for at most ``poll.timeout`` seconds (then Timeout); ``say`` hears the wait once."""
    start = poll.timing.now()
    interval = poll.first
    said = False
    while True:
        try:
            return send()
        except KaggleRefused as exc:
            if not session_refused(exc):
                raise
            waited = poll.timing.now() - start
            if waited + interval > poll.timeout:
                raise _session_timeout(label, exc, waited) from None
            if not said:
                say(session_wait_line(label, exc, 0, poll.timeout))
                said = True
            poll.timing.wait(interval)
            interval = poll.interval_after(interval)


@dataclass
class _Board:
    """Where the lanes stand: the arms not pushed yet (their indexes, in order), those on Kaggle (index ->
    (version, when it was pushed or found)), the outcomes, how many lanes, and since when a push is refused."""

    width: int
    queue: list = field(default_factory=list)
    running: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    refused_since: Optional[float] = None


def lanes_run(arms: list, lanes: Lanes, width: int, poll: Poll, say: Callable[[str], None]) -> list:
    """Every arm through ``lanes``, up to ``width`` on Kaggle at once (fewer once Kaggle says it allows fewer):
    push while a lane is free, read each running arm's status once per round, finish those that ended, and
    sleep the poll interval when a round changed nothing. ``poll.timeout`` bounds each arm's run and the wait
    for a session. The outcomes, in the arms' order."""
    board = _Board(max(1, width))
    for index, arm in enumerate(arms):
        outcome = lanes.done(arm)
        version = None if outcome is not None else lanes.pushed(arm)
        if outcome is not None:
            board.outcomes[index] = outcome
        elif version is not None:
            board.running[index] = (version, poll.timing.now())  # pushed before: it holds a lane
        else:
            board.queue.append(index)
    interval = poll.first
    while board.queue or board.running:
        moved = _pushed_while_free(arms, lanes, board, poll, say)
        moved = _ended_finished(arms, lanes, board, poll) or moved
        if moved:
            interval = poll.first
            continue
        poll.timing.wait(interval)
        interval = poll.interval_after(interval) or poll.longest
    return [board.outcomes[index] for index in range(len(arms))]


def _pushed_while_free(arms: list, lanes: Lanes, board: _Board, poll: Poll, say: Callable[[str], None]) -> bool:
    """Push the next arms while a lane is free; whether one was. A session-count refusal narrows the lanes to
    what Kaggle allows and leaves the arm first in line (Timeout once it has waited poll.timeout)."""
    pushed = False
    while board.queue and len(board.running) < board.width:
        index = board.queue[0]
        try:
            version = lanes.push(arms[index])
        except KaggleRefused as exc:
            if not session_refused(exc):
                raise
            _session_refusal_seen(arms[index].label, exc, board, poll, say)
            return pushed
        board.queue.pop(0)
        board.running[index] = (version, poll.timing.now())
        board.refused_since = None
        pushed = True
    return pushed


def _session_refusal_seen(label: str, exc: KaggleRefused, board: _Board, poll: Poll, say: Callable[[str], None]):
    now = poll.timing.now()
    if board.refused_since is None:
        board.refused_since = now
        say(session_wait_line(label, exc, len(board.running), poll.timeout))
    elif now - board.refused_since > poll.timeout:
        raise _session_timeout(label, exc, now - board.refused_since) from None
    if exc.limit:
        board.width = max(1, min(board.width, exc.limit))


def _ended_finished(arms: list, lanes: Lanes, board: _Board, poll: Poll) -> bool:
    """Read each running arm's status once; finish those whose run ended. Whether one did."""
    ended = False
    for index, (version, since) in list(board.running.items()):
        arm = arms[index]
        if lanes.ended(arm, version):
            del board.running[index]
            board.outcomes[index] = lanes.finish(arm, version)
            ended = True
        elif poll.timing.now() - since > poll.timeout:
            raise Timeout(f"v{version} ({arm.label}) has not ended after {poll.timeout:g} s; wait with: lorakit "
                          f"status {version} --wait")
    return ended
