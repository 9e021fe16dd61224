"""Retries with exponential backoff and jitter, honouring Retry-After, within a bounded total time.

Every Kaggle call lorakit makes goes through :func:`call_with_retry`. Only 429, 5xx and connection
errors are retried (calls that must not run twice narrow that with ``retryable``). The times are tunable
through environment variables so that tests run fast:

``LORAKIT_RETRY_BASE_S``      first backoff delay (default 1.0 s), doubled on every attempt
``LORAKIT_RETRY_MAX_DELAY_S`` cap on one delay, Retry-After included (default 60 s)
``LORAKIT_RETRY_TOTAL_S``     total time budget for one call, retries and timeouts included (default 150 s)
``LORAKIT_RETRY_ATTEMPTS``    maximum attempts for one call (default 6)
``LORAKIT_TIMEOUT_S``         connect and read timeout of one HTTP request (default 30 s)
``LORAKIT_CONFIRM_S``         how long to look for a push or submission whose reply was lost (default 60 s)
``LORAKIT_DOWNLOAD_RETRIES``  resume attempts the kaggle client makes inside one file download (default 3)
``LORAKIT_POLL_START_S``      first poll interval of ``--wait`` (default 10 s), grows 1.5x per poll
``LORAKIT_POLL_MAX_S``        longest poll interval (default 60 s)
``LORAKIT_LOCK_WAIT_S``       how long a pull waits for another pull of the same version (default 600 s)
``LORAKIT_STREAM_TIMEOUT_S``  longest wait for the next byte of a followed log (default 90 s: the kernel prints a
                              progress line every 60 s, so a silent stream longer than that has dropped)
``LORAKIT_STREAM_RECONNECTS`` reconnects of a followed log in a row without a new line (default 5)
``LORAKIT_DATASET_WAIT_S``    how long a push waits for Kaggle to process an uploaded adapter (default 600 s)

With the defaults a server that never answers ends a command within 3 minutes: each request waits at most
the timeout, shortened to what is left of its call's 150 s budget.
"""

from __future__ import annotations

import email.utils
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def _env_float(environ, name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        from lorakit.errors import UsageError

        raise UsageError(f"{name} must be a number of seconds, got {raw!r}")
    if value < 0:
        from lorakit.errors import UsageError

        raise UsageError(f"{name} must not be negative, got {raw!r}")
    return value


def _positive(environ, name: str, default: float) -> float:
    value = _env_float(environ, name, default)
    if value == 0:
        from lorakit.errors import UsageError

        raise UsageError(f"{name} must be a positive number of seconds, got {environ.get(name)!r}")
    return value


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
        environ = os.environ if environ is None else environ
        return cls(
            base_delay=_env_float(environ, "LORAKIT_RETRY_BASE_S", cls.base_delay),
            max_delay=_env_float(environ, "LORAKIT_RETRY_MAX_DELAY_S", cls.max_delay),
            total_time=_env_float(environ, "LORAKIT_RETRY_TOTAL_S", cls.total_time),
            max_attempts=max(1, int(_env_float(environ, "LORAKIT_RETRY_ATTEMPTS", cls.max_attempts))),
            timeout=_positive(environ, "LORAKIT_TIMEOUT_S", cls.timeout),
            confirm_time=_env_float(environ, "LORAKIT_CONFIRM_S", cls.confirm_time),
            download_retries=int(_env_float(environ, "LORAKIT_DOWNLOAD_RETRIES", cls.download_retries)),
            poll_start=_env_float(environ, "LORAKIT_POLL_START_S", cls.poll_start),
            poll_max=_env_float(environ, "LORAKIT_POLL_MAX_S", cls.poll_max),
            lock_wait=_env_float(environ, "LORAKIT_LOCK_WAIT_S", cls.lock_wait),
            stream_timeout=_positive(environ, "LORAKIT_STREAM_TIMEOUT_S", cls.stream_timeout),
            stream_reconnects=int(_env_float(environ, "LORAKIT_STREAM_RECONNECTS", cls.stream_reconnects)),
            dataset_wait=_env_float(environ, "LORAKIT_DATASET_WAIT_S", cls.dataset_wait),
        )

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, with 'equal jitter'."""
        raw = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return raw / 2 + raw / 2 * rng()


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


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    describe: str,
    *,
    sleep: Optional[Callable[[float], None]] = None,
    clock: Optional[Callable[[], float]] = None,
    rng: Optional[Callable[[], float]] = None,
    log=None,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error occurs, or the budget runs out.

    A non-retryable error (by ``retryable``) is re-raised unchanged. When the attempts or the total time
    run out on a retryable error, :class:`GaveUp` is raised with that error as ``last``.
    """
    log = sys.stderr if log is None else log
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    rng = rng or random.random
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not retryable(exc):
                raise
            elapsed = clock() - start
            if attempt >= policy.max_attempts:
                raise GaveUp(exc, attempt, elapsed, f"{attempt} attempts") from exc
            delay = policy.backoff(attempt, rng)
            hinted = retry_after_seconds(exc)
            if hinted is not None:
                if hinted > policy.max_delay:
                    raise GaveUp(exc, attempt, elapsed, f"Kaggle asked to wait {hinted:.0f} s") from exc
                delay = hinted + delay * 0.1  # honour Retry-After, plus a little jitter
            remaining = policy.total_time - elapsed
            if delay > remaining:
                raise GaveUp(exc, attempt, elapsed, f"{policy.total_time:g} s budget") from exc
            status = http_status(exc)
            what = f"HTTP {status}" if status is not None else type(exc).__name__
            print(
                f"lorakit: {describe}: {what}; retrying in {delay:.1f} s (attempt {attempt + 1}/{policy.max_attempts})",
                file=log,
            )
            sleep(delay)
