"""Connect and read timeouts on every HTTP request the kaggle client makes for lorakit.

kaggle and kagglesdk send API calls, the submission upload and the leaderboard download without a timeout,
so a server that accepts the connection and never answers would hang lorakit. One wrapper around
``requests.adapters.HTTPAdapter.send`` gives each request sent without a timeout of its own the seconds of
the innermost :func:`bounded` block, shortened to what is left of that block's deadline. The block may also
name a ``check`` that sees every reply before the kaggle client does (lorakit's one look at what the server
sent: :meth:`lorakit.remote.Remote.reply_check`). Outside a ``bounded`` block requests behave as they always do.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from typing import Callable, Iterator, Optional

MIN_TIMEOUT_S = 0.05  # a zero timeout would make the socket non-blocking rather than fail fast

_LIMIT: contextvars.ContextVar = contextvars.ContextVar("lorakit_http_limit", default=None)
_CHECK: contextvars.ContextVar = contextvars.ContextVar("lorakit_reply_check", default=None)


def request_timeout() -> Optional[float]:
    """Seconds the next request may wait to connect and for each read; None outside :func:`bounded`."""
    limit = _LIMIT.get()
    if limit is None:
        return None
    seconds, deadline = limit
    if deadline is not None:
        seconds = min(seconds, deadline - time.monotonic())
    return max(seconds, MIN_TIMEOUT_S)


def _wrapper_install() -> None:
    from requests.adapters import HTTPAdapter

    if getattr(HTTPAdapter.send, "lorakit_wrapper", False):
        return
    original = HTTPAdapter.send

    @functools.wraps(original)
    def send(self, request, stream=False, timeout=None, *args, **kwargs):
        if timeout is None:
            timeout = request_timeout()
        response = original(self, request, stream, timeout, *args, **kwargs)
        check = _CHECK.get()
        if check is not None:
            check(request, response, stream)
        return response

    send.lorakit_wrapper = True
    HTTPAdapter.send = send


@contextlib.contextmanager
def bounded(seconds: float, deadline: Optional[float] = None, check: Optional[Callable] = None) -> Iterator[None]:
    """Requests sent inside wait at most ``seconds`` (and never past ``deadline``, a time.monotonic());
    ``check(request, response, stream)`` sees each reply first and may raise or rewrite its body."""
    _wrapper_install()
    token = _LIMIT.set((float(seconds), deadline))
    check_token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(check_token)
        _LIMIT.reset(token)
