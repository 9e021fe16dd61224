"""Retries with exponential backoff and jitter, honouring Retry-After, within a bounded total time.

Every Kaggle call lorakit makes goes through :func:`call_with_retry`. Only 429, 5xx and connection
errors are retried (calls that must not run twice narrow that with ``retryable``). The times are tunable
through the environment variables of :data:`ENVIRONMENT` (tests make them short). With the defaults a server
that never answers ends a command within 3 minutes: each request waits at most the timeout, shortened to what
is left of its call's 150 s budget.
"""

from __future__ import annotations

import email.utils
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 1.0
    max_delay: float = 60.0
    total_time: float = 150.0
    max_attempts: int = 6
    timeout: float = 30.0
    confirm_time: float = 60.0
    download_retries: int = 3
    poll_start: float = 10.0
    poll_max: float = 60.0
    lock_wait: float = 600.0
    stream_timeout: float = 90.0
    stream_reconnects: int = 5
    dataset_wait: float = 600.0

    @classmethod
    def from_env(cls, environ=None) -> "RetryPolicy":
        """The policy with every variable of ENVIRONMENT that is set; a malformed value is a UsageError."""
        environ = os.environ if environ is None else environ
        values = {var.field: var.parse(environ.get(var.name), getattr(cls, var.field))
                  for var in ENVIRONMENT if var.field and environ.get(var.name) not in (None, "")}
        return cls(**values)

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, with 'equal jitter'."""
        raw = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return raw / 2 + raw / 2 * rng()


@dataclass(frozen=True)
class EnvVar:
    """An environment variable lorakit reads: the RetryPolicy field it sets (if any) and what it means."""

    name: str
    field: str  # "" for a switch read where it is used
    meaning: str
    positive: bool = False  # 0 is refused

    @property
    def default(self) -> str:
        return f"{getattr(RetryPolicy, self.field):g}" if self.field else ""

    def parse(self, raw: str, default):
        from lorakit.errors import UsageError

        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"{self.name} must be a number, got {raw!r}") from None
        if value < 0 or (self.positive and value == 0) or not value < float("inf"):
            raise UsageError(f"{self.name} must be a {'positive' if self.positive else 'non-negative'} number, "
                             f"got {raw!r}")
        return int(value) if isinstance(default, int) else value


# Every variable lorakit reads, in one place: RetryPolicy.from_env, `lorakit --help` and docs/cli.md use it.
ENVIRONMENT = (
    EnvVar("LORAKIT_TIMEOUT_S", "timeout", "seconds one HTTP request may wait to connect, and for each read", True),
    EnvVar("LORAKIT_RETRY_TOTAL_S", "total_time", "seconds one call may take, retries and waits included"),
    EnvVar("LORAKIT_RETRY_ATTEMPTS", "max_attempts", "attempts of one call on 429, 5xx and connection errors", True),
    EnvVar("LORAKIT_RETRY_BASE_S", "base_delay", "first backoff delay in seconds, doubled per attempt, with jitter"),
    EnvVar("LORAKIT_RETRY_MAX_DELAY_S", "max_delay", "longest single delay; a longer Retry-After gives up at once"),
    EnvVar("LORAKIT_DOWNLOAD_RETRIES", "download_retries", "resumed attempts inside one file download"),
    EnvVar("LORAKIT_CONFIRM_S", "confirm_time",
           "seconds to look on Kaggle for a push or submission whose reply was lost, before sending it again"),
    EnvVar("LORAKIT_POLL_START_S", "poll_start", "first interval of a --wait poll; it grows 1.5x per poll"),
    EnvVar("LORAKIT_POLL_MAX_S", "poll_max", "longest interval of a --wait poll"),
    EnvVar("LORAKIT_LOCK_WAIT_S", "lock_wait", "seconds a pull waits for another pull of the same version"),
    EnvVar("LORAKIT_STREAM_TIMEOUT_S", "stream_timeout",
           "seconds a followed log waits per read (longer than the kernel's 60 s progress line)", True),
    EnvVar("LORAKIT_STREAM_RECONNECTS", "stream_reconnects",
           "reconnects of a followed log in a row without a new line, before it falls back to status polls"),
    EnvVar("LORAKIT_DATASET_WAIT_S", "dataset_wait", "seconds a push waits for Kaggle to process an uploaded adapter"),
    EnvVar("LORAKIT_VERBOSE", "", "1: also show what the kaggle client printed"),
    EnvVar("LORAKIT_DEBUG", "", "1: a traceback instead of one line on an internal error"),
)


def http_status(exc: BaseException) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def retry_after_seconds(exc: BaseException) -> Optional[float]:
    """The Retry-After header of an HTTP error, in seconds (integer or HTTP-date form), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def is_connection_error(exc: BaseException) -> bool:
    try:
        import requests
        import urllib3.exceptions as u3
    except ImportError:  # pragma: no cover - requests comes with kaggle
        return isinstance(exc, (ConnectionError, TimeoutError))
    return isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            u3.ProtocolError,
            u3.ConnectTimeoutError,
            u3.ReadTimeoutError,
            ConnectionError,
            TimeoutError,
        ),
    )


def is_retryable(exc: BaseException) -> bool:
    status = http_status(exc)
    if status is not None:
        return status == 429 or 500 <= status <= 599
    return is_connection_error(exc)


def is_unsent(exc: BaseException) -> bool:
    """True when the request never reached the server (refused, unresolvable, connect timeout)."""
    import urllib3.exceptions as u3

    seen = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, u3.ConnectTimeoutError):  # NewConnectionError is one too
            return True
        stack.extend([getattr(error, "reason", None), error.__cause__, error.__context__])
        stack.extend(a for a in getattr(error, "args", ()) if isinstance(a, BaseException))
    return False


class GaveUp(Exception):
    """Raised by call_with_retry when the budget ran out; ``last`` is the final error."""

    def __init__(self, last: BaseException, attempts: int, elapsed: float, reason: str):
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason = reason


@dataclass(frozen=True)
class Timing:
    """The clock a retry or a poll waits by: time.sleep, time.monotonic and random.random unless a test
    passes its own (looked up at each use, so that a test may also patch the time module)."""

    sleep: Optional[Callable[[float], None]] = None
    clock: Optional[Callable[[], float]] = None
    rng: Optional[Callable[[], float]] = None

    def wait(self, seconds: float) -> None:
        (self.sleep or time.sleep)(seconds)

    def now(self) -> float:
        return (self.clock or time.monotonic)()

    def jitter(self) -> float:
        return (self.rng or random.random)()


@dataclass(frozen=True)
class Poll:
    """How a wait polls: first after ``first`` seconds, each interval 1.5 times longer up to ``longest``, for
    ``timeout`` seconds in all."""

    timeout: float
    first: float
    longest: float
    timing: Timing = Timing()

    @classmethod
    def of(cls, policy: RetryPolicy, timeout: float) -> "Poll":
        """LORAKIT_POLL_START_S growing up to LORAKIT_POLL_MAX_S, for ``timeout`` seconds."""
        return cls(timeout, max(0.0, policy.poll_start), max(0.0, policy.poll_max))

    def interval_after(self, interval: float) -> float:
        return min(self.longest, interval * 1.5) if interval else 0.0


class Follower(Protocol):
    """What waits instead of sleeping while it can (a followed log): ``live(value)`` says whether it can now,
    ``follow()`` waits and says whether something new came (then the state is read again at once)."""

    def live(self, value) -> bool: ...

    def follow(self) -> bool: ...


def poll_until(read: Callable[[], T], seen: Callable[[T, float], bool], poll: Poll,
               stalled: Callable[[T, float], Exception], follower: Optional[Follower] = None) -> T:
    """``read()`` until ``seen(value, seconds elapsed)`` says the wait is over (it may also record, show or
    raise); between reads sleep the interval, or let a live ``follower`` wait. Raises ``stalled(value,
    elapsed)`` when the next wait would pass ``poll.timeout``."""
    start = poll.timing.now()
    interval = poll.first
    while True:
        value = read()
        elapsed = poll.timing.now() - start
        if seen(value, elapsed):
            return value
        live = follower is not None and follower.live(value)
        if elapsed + (0 if live else interval) > poll.timeout:
            raise stalled(value, elapsed)
        if live and follower.follow():
            continue  # it brought news (or its deadline came): read again at once
        poll.timing.wait(interval)
        interval = poll.interval_after(interval)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    describe: str,
    *,
    timing: Timing = Timing(),
    log=None,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error occurs, or the budget runs out.

    A non-retryable error (by ``retryable``) is re-raised unchanged. When the attempts or the total time
    run out on a retryable error, :class:`GaveUp` is raised with that error as ``last``.
    """
    log = sys.stderr if log is None else log
    start = timing.now()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not retryable(exc):
                raise
            delay = retry_delay(exc, policy, attempt, timing.now() - start, timing)
            status = http_status(exc)
            what = f"HTTP {status}" if status is not None else type(exc).__name__
            print(
                f"lorakit: {describe}: {what}; retrying in {delay:.1f} s (attempt {attempt + 1}/{policy.max_attempts})",
                file=log,
            )
            timing.wait(delay)


def retry_delay(exc: Exception, policy: RetryPolicy, attempt: int, elapsed: float, timing: Timing) -> float:
    """The wait before retrying after ``exc`` (Retry-After when Kaggle sent one); GaveUp when the attempts or
    the time run out, or Kaggle asks for a longer wait than LORAKIT_RETRY_MAX_DELAY_S."""
    if attempt >= policy.max_attempts:
        raise GaveUp(exc, attempt, elapsed, f"{attempt} attempts") from exc
    delay = policy.backoff(attempt, timing.jitter)
    hinted = retry_after_seconds(exc)
    if hinted is not None:
        if hinted > policy.max_delay:
            raise GaveUp(exc, attempt, elapsed, f"Kaggle asked to wait {hinted:.0f} s") from exc
        delay = hinted + delay * 0.1  # honour Retry-After, plus a little jitter
    if delay > policy.total_time - elapsed:
        raise GaveUp(exc, attempt, elapsed, f"{policy.total_time:g} s budget") from exc
    return delay
