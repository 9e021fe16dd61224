"""The transport to Kaggle, through the official ``kaggle`` package (``KaggleApi`` and its kagglesdk client):
authentication, timeouts, retries, reply checks and error translation. lorakit.remote's endpoints sit on it.

``kaggle`` is imported lazily: it authenticates on import and prints to stdout when it finds no
credentials, so the import happens with stdout captured, on the first call that needs the network.
Every call goes through :func:`lorakit.retry.call_with_retry` inside :func:`lorakit.timeouts.bounded`
(so no request waits forever), and every failure becomes a one-line :class:`RemoteError` with advice for
the status code. A push or a submission is never sent twice blindly (:meth:`Transport.call_confirmed`).
Every reply passes :meth:`Transport.reply_check` before the client reads it: what is not the API's JSON (a web
page, an empty body, a redirect) is one line saying what came back, never a status, and the user's secrets
are cut out of everything the server sent, so no message printed or stored holds one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, TypeVar
from urllib.parse import urlsplit

from lorakit.credentials import (
    ACCESS_TOKEN_SOURCES,
    CREDENTIALS_FIX,
    credentials_missing_message,
    credentials_permission_warning,
    credentials_source_of,
    default_config_dir,
    secrets_before_authentication,
    token_file_check,
)
from lorakit.errors import LorakitError, RemoteError, Unconfirmed
from lorakit.retry import GaveUp, RetryPolicy, call_with_retry, http_status, is_connection_error, is_retryable, is_unsent
from lorakit.timeouts import bounded

T = TypeVar("T")

IMPORT_AUTH_S = 2.0  # kaggle authenticates on import and discards the outcome: a slow server must not hold it
NOT_THE_API = "not Kaggle's API: a captive portal or proxy?"
_API_CALL = re.compile(r"/v1/[A-Za-z0-9_]+\.[A-Za-z0-9_]+/([A-Za-z0-9_]+)$")  # .../v1/<service>/<Method>
# Kaggle's JSON leaves out fields that hold their default, and a queued run's status (QUEUED) is the default: a
# status reply without one is read as QUEUED, as the client reads it, but never recorded (a proxy's {} is too).
STATUS_CALL = "GetKernelSessionStatus"


class OddReply(Exception):
    """A reply lorakit must not take as fact: not the API's JSON, or a value the kaggle client does not know.
    Its text says what came back."""


def api_method_of(request, stream: bool) -> Optional[str]:
    """The method of a Kaggle API call (a POST to .../v1/<service>/<Method> whose reply is read whole);
    None for downloads, uploads and the log stream."""
    if stream or request.method != "POST":
        return None
    match = _API_CALL.search(urlsplit(request.url).path)
    return match.group(1) if match else None


def _is_log_stream(request) -> bool:
    return request.method == "GET" and "/v1/kernels/logs/stream/" in urlsplit(request.url).path


def reply_problem(method: str, response) -> Optional[str]:
    """What an API call's reply is when it is not the API's JSON; None when it is (or when it is an HTTP
    error, which its status describes)."""
    status = response.status_code
    if 300 <= status < 400:
        return f"a redirect (HTTP {status} to {response.headers.get('Location') or 'nowhere'}), {NOT_THE_API}"
    if status >= 400:
        return None
    body = (response.content or b"").strip()
    kind = (response.headers.get("Content-Type") or "").lower()
    if not body:
        return f"an empty reply (HTTP {status}), {NOT_THE_API}"
    if "html" in kind or body[:1] == b"<":
        return f"a web page, {NOT_THE_API}"
    data = json_loads_safe(body)
    if not isinstance(data, dict):
        return f"a reply that is not JSON ({kind or 'no content type'}), {NOT_THE_API}"
    return None


def _failure(exc: BaseException) -> str:
    """A few words for a failed request: 'HTTP 502', 'ReadTimeout'."""
    if isinstance(exc, RemoteError):
        return f"HTTP {exc.status}" if exc.status else "Kaggle unreachable"
    status = http_status(exc)
    return f"HTTP {status}" if status is not None else type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    import requests
    import urllib3.exceptions as u3

    if isinstance(exc, (requests.exceptions.Timeout, u3.TimeoutError, TimeoutError)):
        return True
    return any(isinstance(a, u3.ReadTimeoutError) for a in getattr(exc, "args", ()))


def _with_budget(policy: RetryPolicy, budget: float) -> RetryPolicy:
    return replace(policy, total_time=budget)



class Transport:
    """One authenticated KaggleApi, plus timeouts, retries, reply checks and error translation."""

    def __init__(self, policy: Optional[RetryPolicy] = None, log=None):
        self.policy = policy or RetryPolicy.from_env()
        self.log = sys.stderr if log is None else log
        self._api = None
        self._secrets: list[str] = []
        self.credentials_source = "your credentials"
        self.status_named = True  # whether the last status reply named its status (reply_check)
        self.kaggle_output = io.StringIO()  # what the kaggle package printed; shown with LORAKIT_VERBOSE=1

    # -- setup -----------------------------------------------------------------------------------------
    def _quiet(self):
        return contextlib.redirect_stdout(self.kaggle_output)

    def _bounded(self, budget: Optional[float] = None):
        budget = self.policy.total_time if budget is None else budget
        return bounded(self.policy.timeout, time.monotonic() + budget, check=self.reply_check)

    def reply_check(self, request, response, stream: bool) -> None:
        """Every reply to an API call, before the kaggle client reads it: OddReply unless it is the API's JSON;
        the user's secrets cut out of its body (the one place for everything the server sends but the log
        stream, which kernel_log_stream redacts)."""
        method = api_method_of(request, stream)
        if method is None:
            if _is_log_stream(request) and 200 <= response.status_code < 300 \
                    and "html" in (response.headers.get("Content-Type") or "").lower():
                raise OddReply(f"a web page, {NOT_THE_API}")  # the client would show its lines as the log
            return
        problem = reply_problem(method, response)
        if problem:
            raise OddReply(problem)
        if method == STATUS_CALL and response.status_code < 300:
            self.status_named = "status" in json_loads_safe(response.content)
        body = response.content
        if response.status_code >= 400 and "json" in (response.headers.get("Content-Type") or "").lower() \
                and not isinstance(json_loads_safe(body), dict):  # the client would choke on it, status unread
            body = json.dumps({"code": response.status_code, "message": "a reply that is not JSON"}).encode()
        for secret in self._secrets_long():
            body = body.replace(secret.encode("utf-8"), b"***")
        response._content = body  # what requests' .text and .json() read

    def _flush_kaggle_output(self) -> None:
        text = self.kaggle_output.getvalue()
        if text and os.environ.get("LORAKIT_VERBOSE"):
            self.log.write(self.redact(text))
        self.kaggle_output.seek(0)
        self.kaggle_output.truncate()

    @property
    def api(self):
        if self._api is None:
            self._api = self._authenticate()
        return self._api

    def _authenticate(self):
        token_file_check()
        api = self._api_new()
        self._secrets += secrets_before_authentication(api.config)
        # The client's order: an access token (KAGGLE_API_TOKEN, value or file; ~/.kaggle/access_token),
        # then kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY, then kaggle auth login's credentials.
        from kagglesdk import get_access_token_from_env

        token, token_source = get_access_token_from_env()
        if token:
            self._secrets.append(token)
            self.credentials_source = ACCESS_TOKEN_SOURCES.get(token_source, token_source)
        try:
            with self._quiet(), self._bounded():
                call_with_retry(api.authenticate, self.policy, "authenticate", log=self.log)
        except SystemExit:
            raise RemoteError(credentials_missing_message(api.config, token_source), status=401) from None
        except Exception as exc:  # noqa: BLE001 - token introspection goes over the network
            raise self._translate(exc, "authenticate") from None
        finally:
            self.kaggle_output.seek(0)
            self.kaggle_output.truncate()
        self._secrets += [str(api.config_values[key]) for key in ("key", "token") if api.config_values.get(key)]
        self.credentials_source = credentials_source_of(api, token, token_source, self.log)
        return api

    def _api_new(self):
        """A KaggleApi that reads this call's environment (kaggle fixes its config folder and --local at import)."""
        with self._quiet(), bounded(IMPORT_AUTH_S, time.monotonic() + IMPORT_AUTH_S):
            try:
                from kaggle.api.kaggle_api_extended import KaggleApi
            except ImportError:
                raise RemoteError(
                    "the kaggle package is not installed: pip install 'kaggle>=2.2.5,<2.3'"
                ) from None
            except SystemExit:  # pragma: no cover - kaggle swallows it, but be safe
                raise RemoteError(f"no Kaggle credentials found; {CREDENTIALS_FIX}", status=401)
        api = KaggleApi()
        config_dir = default_config_dir()
        api.config_dir = config_dir
        api.config = os.path.join(config_dir, api.config_file)
        args = [a for a in KaggleApi.args if a != "--local"]
        if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST":
            args.append("--local")
        api.args = args
        warning = credentials_permission_warning(config_dir)
        if warning:
            print(f"lorakit: warning: {warning}", file=self.log)
        return api
    def _secrets_long(self) -> list:
        """The secrets worth cutting out (a very short one would mangle every text), longest first."""
        return sorted({s for s in self._secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets_long():
            text = text.replace(secret, "***")
        return text

    @property
    def username(self) -> str:
        name = self.api.config_values.get("username") or ""
        if not name:
            raise RemoteError(f"could not tell the Kaggle username from {self.credentials_source}; {CREDENTIALS_FIX}")
        return name

    # -- error handling ------------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, what: str, not_found: str = "", forbidden: str = "") -> RemoteError:
        attempts = ""
        if isinstance(exc, GaveUp):
            attempts = f" (gave up after {exc.attempts} attempt{'' if exc.attempts == 1 else 's'}, {exc.elapsed:.0f} s: {exc.reason})"
            exc = exc.last
        status = http_status(exc)
        if isinstance(exc, OddReply):
            msg = f"{what}: {exc}"
        elif isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):  # the client's enums
            msg = f"{what}: unknown value {exc.args[0]!r} from Kaggle (a newer kaggle package may know it)"
        elif status == 401:
            msg = f"{what}: Kaggle rejected the credentials (401) from {self.credentials_source}; {CREDENTIALS_FIX}"
        elif status == 403:
            msg = f"{what}: forbidden (403); {forbidden or 'check that your account may access this resource'}"
        elif status == 404:
            msg = f"{what}: not found (404); {not_found or 'check the slug or id'}"
        elif status == 429:
            msg = f"{what}: rate limited by Kaggle (429){attempts}; wait a few minutes and try again"
        elif status is not None and status >= 500:
            msg = f"{what}: Kaggle server error ({status}){attempts}; this is on Kaggle's side, try again later"
        elif status is not None:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            msg = f"{what}: HTTP {status}: {detail}"
        elif _is_timeout(exc):
            msg = (
                f"{what}: Kaggle did not answer in time ({type(exc).__name__} after LORAKIT_TIMEOUT_S="
                f"{self.policy.timeout:g} s){attempts}; try again later"
            )
        elif is_connection_error(exc):
            msg = f"{what}: could not reach Kaggle{attempts} ({type(exc).__name__}); check your network or proxy"
        else:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            msg = f"{what}: {detail}"
        words = self.redact(server_words(str(exc))) if status is not None else ""
        return RemoteError(self.redact(msg), status=status, detail=words)

    def call(
        self,
        what: str,
        fn: Callable,
        not_found: str = "",
        forbidden: str = "",
        retryable: Callable[[BaseException], bool] = is_retryable,
        budget: Optional[float] = None,
    ):
        """Run ``fn()`` (which uses the kaggle API) with timeouts, retries and error translation.

        ``budget`` (default LORAKIT_RETRY_TOTAL_S) bounds the whole call, every request's wait included.
        """
        self.api  # noqa: B018 - authenticate first, outside the retry loop
        policy = self.policy if budget is None else _with_budget(self.policy, budget)
        try:
            with self._quiet(), self._bounded(policy.total_time):
                return call_with_retry(fn, policy, what, log=self.log, retryable=retryable)
        except LorakitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, what, not_found, forbidden) from None
        finally:
            self._flush_kaggle_output()

    def call_confirmed(self, what: str, send: Callable, went_through: Callable, not_found: str = "", forbidden: str = ""):
        """``send()`` a call that must not run twice (SaveKernel, CreateSubmission); (its reply, recovered).

        A 4xx reply, 429 included, is final. After a 5xx, a timeout or a dropped connection the call may
        have gone through: ``went_through()`` is polled for LORAKIT_CONFIRM_S and its reply is returned as
        the call's (recovered=True); when it finds nothing the call is sent again, within the retry
        budget; when the check itself fails, :class:`Unconfirmed` is raised and nothing is sent again.
        """
        recovered = []

        def attempt():
            try:
                return send()
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_retryable(exc) or http_status(exc) == 429 or is_unsent(exc):
                    raise  # final, or it never reached Kaggle
                print(f"lorakit: {what}: {_failure(exc)}; checking whether it went through", file=self.log)
                found = self._went_through_poll(what, went_through, exc)
                if found is None:
                    raise  # it did not go through: sending it again is safe
                recovered.append(True)
                return found

        reply = self.call(
            what, attempt, not_found, forbidden, retryable=lambda e: is_retryable(e) and http_status(e) != 429
        )
        return reply, bool(recovered)

    def _went_through_poll(self, what: str, went_through: Callable, lost: BaseException):
        deadline = time.monotonic() + self.policy.confirm_time
        checks = 0
        while True:
            checks += 1
            try:
                found = self.call(
                    f"check whether {what} went through", went_through, budget=max(0.0, deadline - time.monotonic())
                )
            except RemoteError as exc:
                raise Unconfirmed(
                    self.redact(
                        f"{what}: the reply was lost ({_failure(lost)}) and checking whether it went through failed "
                        f"({_failure(exc)}); it may have gone through"
                    )
                ) from None
            if found is not None:
                return found
            delay = self.policy.backoff(checks)
            if time.monotonic() + delay > deadline:
                return None
            time.sleep(delay)

    def client(self):
        return self.api.build_kaggle_client()

    def _none_on_404(self, request: Callable):
        """``request(kaggle_client)``'s reply, or None when Kaggle answers 404 (the resource does not exist)."""
        try:
            with self.client() as kaggle:
                return request(kaggle)
        except Exception as exc:  # noqa: BLE001
            if http_status(exc) == 404:
                return None
            raise


    def _body_save(self, response, dest: Path, what: str) -> None:
        """Stream a response's body into ``dest`` with the kaggle client's downloader (size checked, resumable)."""
        try:
            with self._quiet():
                self.api.download_file(
                    response,
                    str(dest),
                    None,
                    quiet=True,
                    resume=False,
                    max_retries=self.policy.download_retries,
                    timeout=self.policy.timeout,
                )
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(self.redact(f"download of {what} failed ({type(exc).__name__}: {_first_line(exc)})"))
        finally:
            response.close()
            self._flush_kaggle_output()

def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""



SERVER_WORDS_MAX = 300  # characters of Kaggle's own message kept with an HTTP error


def server_words(text: str) -> str:
    """The first line of what a server said, as one short printable line (it is untrusted)."""
    line = (text or "").strip().split("\n", 1)[0][:SERVER_WORDS_MAX]
    return "".join(ch if ch.isprintable() else " " for ch in line).strip()


def json_loads_safe(text: str):
    """The JSON value of ``text``; None for what is no JSON, or nested too deep for Python to parse."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None

def pages_read(fetch: Callable[[str, int], Any], items_of: Callable[[Any], list], key: Callable[[Any], Hashable],
               limit: int, enough: Optional[Callable[[list], bool]] = None) -> list:
    """The items of a paged listing: ``fetch(page_token, page_number)`` one page after the other, until a page
    has no next token or adds nothing new (a server that ignores the token must not loop us), ``enough`` says
    the items read so far suffice, or ``limit`` pages were read. Items are kept once, by ``key``."""
    items: list = []
    seen: set = set()
    token = ""
    for number in range(1, max(1, limit) + 1):
        response = fetch(token, number)
        before = len(items)
        for item in items_of(response):
            if key(item) not in seen:
                seen.add(key(item))
                items.append(item)
        token = getattr(response, "next_page_token", None) or ""
        if not token or len(items) == before or (enough is not None and enough(items)):
            break
    return items


def enum_name(value) -> str:
    """The name of a kagglesdk enum value in a reply (the text itself when it is none)."""
    return getattr(value, "name", None) or str(value or "")
