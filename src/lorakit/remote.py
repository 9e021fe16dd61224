"""Kaggle access through the official ``kaggle`` package (``KaggleApi`` and its kagglesdk client).

``kaggle`` is imported lazily: it authenticates on import and prints to stdout when it finds no
credentials, so the import happens with stdout captured, on the first call that needs the network.
Every call goes through :func:`lorakit.retry.call_with_retry` inside :func:`lorakit.timeouts.bounded`
(so no request waits forever), and every failure becomes a one-line :class:`RemoteError` with advice for
the status code. A push or a submission is never sent twice blindly (:meth:`Remote.call_confirmed`).
Every reply passes :meth:`Remote.reply_check` before the client reads it: what is not the API's JSON (a web
page, an empty body, a redirect) is one line saying what came back, never a status, and the user's secrets
are cut out of everything the server sent, so no message printed or stored holds one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from lorakit.errors import LorakitError, RemoteError, Unconfirmed
from lorakit.retry import GaveUp, RetryPolicy, call_with_retry, http_status, is_connection_error, is_retryable, is_unsent
from lorakit.timeouts import bounded

# What the kaggle client's own help recommends, in its order.
CREDENTIALS_FIX = (
    "run `kaggle auth login` (recommended), or save an API token from https://www.kaggle.com/settings/api "
    "in ~/.kaggle/access_token or KAGGLE_API_TOKEN"
)
ACCESS_TOKEN_SOURCES = {  # kagglesdk's names for where it found an access token
    "KAGGLE_API_TOKEN": "KAGGLE_API_TOKEN",
    "access_token": "~/.kaggle/access_token",
    "KAGGLE_API_V1_TOKEN": "KAGGLE_API_V1_TOKEN",
}
OAUTH_SOURCE = "kaggle auth login's ~/.kaggle/credentials.json"
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


@dataclass(frozen=True)
class OutputFile:
    name: str
    url: str


@dataclass(frozen=True)
class KernelStatus:
    status: str
    failure_message: str = ""
    named: bool = True  # False when the reply named no status (read as QUEUED, the default): never recorded

    @property
    def shown(self) -> str:
        return self.status if self.named else f"{self.status} (the reply named no status: not recorded)"

    def as_json(self) -> dict:
        return {"status": self.status, "failure_message": self.failure_message or None, "status_named": self.named}


@dataclass(frozen=True)
class Submission:
    ref: int
    status: str
    public_score: Optional[float]
    private_score: Optional[float]
    description: str
    date: str
    error: str = ""
    team_name: str = ""

    def as_json(self) -> dict:
        return {"ref": self.ref, "status": self.status, "public_score": self.public_score,
                "private_score": self.private_score, "description": self.description, "date": self.date,
                "error": self.error or None}


def _score(text) -> Optional[float]:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _enum_name(value) -> str:
    return getattr(value, "name", None) or str(value or "")


def submission_from_api(item) -> Submission:
    date = getattr(item, "date", None)
    return Submission(
        ref=int(getattr(item, "ref", 0) or 0),
        status=_enum_name(getattr(item, "status", "")),
        public_score=_score(getattr(item, "public_score", None)),
        private_score=_score(getattr(item, "private_score", None)),
        description=getattr(item, "description", None) or "",
        date=date.isoformat(timespec="seconds") if hasattr(date, "isoformat") else str(date or ""),
        error=(getattr(item, "error_description", None) or "").strip(),
        team_name=getattr(item, "team_name", None) or "",
    )


def default_config_dir() -> str:
    """Where the kaggle client looks for kaggle.json, following its own rules."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return configured
    legacy = os.path.join(os.path.expanduser("~"), ".kaggle")
    if sys.platform.startswith("linux") and not os.path.exists(legacy):
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(base, "kaggle")
    return legacy


def credentials_permission_warning(config_dir: str) -> Optional[str]:
    path = os.path.join(config_dir, "kaggle.json")
    if os.name == "nt" or not os.path.isfile(path):
        return None
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by group or others; run: chmod 600 {path}"
    return None


def credentials_file_problem(path: str) -> Optional[str]:
    """What is wrong with kaggle.json, which the kaggle client silently ignores; None when absent or usable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    data = json_loads_safe(text)
    if not isinstance(data, dict):
        return "is not a valid JSON object"
    missing = [k for k in ("username", "key") if not data.get(k) and not os.environ.get(f"KAGGLE_{k.upper()}")]
    if missing:
        return "lacks " + " and ".join(repr(k) for k in missing)
    return None


def token_rejected_message(token_source: str) -> str:
    where = ACCESS_TOKEN_SOURCES.get(token_source, token_source)
    return (
        f"Kaggle rejected the access token from {where} (inactive or expired); the kaggle client tries it first "
        f"and sends it with every call, so replace or remove it: {CREDENTIALS_FIX}"
    )


def token_file_missing(value: Optional[str]) -> Optional[str]:
    """The file KAGGLE_API_TOKEN names when it looks like a path that does not exist (the kaggle client
    would send the path itself as the token); None otherwise."""
    if not value or Path(value).exists():
        return None
    path_like = value.startswith(("/", "~", ".")) or re.match(r"[A-Za-z]:[\\/]", value) or value.endswith(
        (".txt", ".json", "access_token"))
    return value if path_like else None


def token_file_check() -> None:
    """Refuse a KAGGLE_API_TOKEN that names a missing file, which the client would send as the token itself."""
    missing = token_file_missing(os.environ.get("KAGGLE_API_TOKEN"))
    if missing:
        raise RemoteError(
            f"KAGGLE_API_TOKEN names the file {missing}, which does not exist"
            f"{' (~ is not expanded)' if missing.startswith('~') else ''}; fix the path or unset it, or "
            f"{CREDENTIALS_FIX}", status=401
        )


def secrets_before_authentication(kaggle_json: str) -> list:
    """The secrets known before any reply comes: KAGGLE_KEY, KAGGLE_API_TOKEN (unless it names a file) and
    kaggle.json's key (the access token the client finds is added once it is read)."""
    found = [os.environ[name] for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")
             if os.environ.get(name) and not Path(os.environ[name]).exists()]  # a token file's name is no secret
    stored = json_loads_safe(_text_or_empty(kaggle_json))
    if isinstance(stored, dict) and stored.get("key"):
        found.append(str(stored["key"]))
    return found


def credentials_missing_message(kaggle_json: str, token_source: Optional[str]) -> str:
    """Why the kaggle client found no usable credentials, following its order of lookup."""
    if token_source:
        return token_rejected_message(token_source)
    problem = credentials_file_problem(kaggle_json)
    if problem:
        return f"the Kaggle credentials file {kaggle_json} {problem}; fix or remove it, or {CREDENTIALS_FIX}"
    return (
        f"no Kaggle credentials found (looked for KAGGLE_API_TOKEN, ~/.kaggle/access_token, {kaggle_json} "
        f"or KAGGLE_USERNAME and KAGGLE_KEY, then {OAUTH_SOURCE}); {CREDENTIALS_FIX}"
    )


@dataclass(frozen=True)
class PushReply:
    version: int
    url: str = ""
    error: str = ""
    invalid_sources: tuple = ()

    @classmethod
    def of(cls, response) -> "PushReply":
        invalid = [
            *(getattr(response, "invalid_kernel_sources", None) or []),
            *(getattr(response, "invalid_competition_sources", None) or []),
            *(getattr(response, "invalid_dataset_sources", None) or []),
        ]
        return cls(
            int(getattr(response, "version_number", 0) or 0),
            getattr(response, "url", "") or "",
            (getattr(response, "error", "") or "").strip(),
            tuple(invalid),
        )


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


def _upload_put(url: str, path: Path) -> None:
    """PUT the file to its upload URL, as kaggle's upload_complete does without a resume.

    Not upload_complete itself: it retries a stalled PUT ten times inside one call, beyond any budget.
    """
    import requests

    with open(path, "rb") as handle:
        response = requests.put(url, data=handle)  # the timeout comes from bounded()
    response.raise_for_status()


class Remote:
    """One authenticated KaggleApi, plus timeouts, retries and error translation."""

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
        with self._quiet(), bounded(IMPORT_AUTH_S, time.monotonic() + IMPORT_AUTH_S):
            try:
                from kaggle.api.kaggle_api_extended import KaggleApi
            except ImportError:
                raise RemoteError(
                    "the kaggle package is not installed: pip install 'kaggle>=2.2.5,<2.3'"
                ) from None
            except SystemExit:  # pragma: no cover - kaggle swallows it, but be safe
                raise RemoteError(f"no Kaggle credentials found; {CREDENTIALS_FIX}", status=401)
        from kagglesdk import get_access_token_from_env

        api = KaggleApi()
        # kaggle fixes these at import time; honour the environment of this call instead.
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
        self._secrets += secrets_before_authentication(api.config)
        # The client's order: an access token (KAGGLE_API_TOKEN, value or file; ~/.kaggle/access_token),
        # then kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY, then kaggle auth login's credentials.
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
        for key in ("key", "token"):
            value = api.config_values.get(key)
            if value:
                self._secrets.append(str(value))
        method = str(api.config_values.get("auth_method") or "")
        if method == "LEGACY_API_KEY":
            self.credentials_source = "KAGGLE_USERNAME and KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else api.config
        elif method == "OAUTH":
            self.credentials_source = OAUTH_SOURCE
        if token and method == "LEGACY_API_KEY":
            # The client fell back to kaggle.json, yet its HTTP layer still sends the rejected token.
            raise RemoteError(token_rejected_message(token_source), status=401)
        if token and method == "OAUTH":  # kaggle auth login's token is sent instead: this works
            where = ACCESS_TOKEN_SOURCES.get(token_source, token_source)
            print(f"lorakit: warning: Kaggle rejected the access token from {where}; using {OAUTH_SOURCE}", file=self.log)
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
            attempts = f" (gave up after {exc.attempts} attempt(s), {exc.elapsed:.0f} s: {exc.reason})"
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
        return RemoteError(self.redact(msg), status=status)

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

    # -- kernels -------------------------------------------------------------------------------------------
    def _kernel_get(self, ref, version: Optional[int] = None):
        """GetKernel: metadata and source of the newest version (or of ``version``); None on 404."""
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        request = ApiGetKernelRequest()
        request.user_name = ref.owner
        request.kernel_slug = ref.slug
        if version:
            request.version_label = f"v{int(version)}"
        return self._none_on_404(lambda kaggle: kaggle.kernels.kernels_api_client.get_kernel(request))

    def kernel_version_latest(self, ref) -> int:
        """The newest version number of kernel ``ref`` (0 when it does not exist yet)."""
        response = self.call(
            f"read the newest version of {ref}",
            lambda: self._kernel_get(ref),
            forbidden=f"check that you own the kernel {ref}",
        )
        metadata = getattr(response, "metadata", None)
        return int(getattr(metadata, "current_version_number", 0) or 0)

    def kernel_source_get(self, ref, version: int) -> Optional[str]:
        """The script of version ``version`` of ``ref`` as Kaggle holds it; None when there is no such version."""
        response = self.call(
            f"read the source of {ref} v{version}",
            lambda: self._kernel_get(ref, version),
            forbidden=f"check that you own the kernel {ref}",
        )
        blob = getattr(response, "blob", None)
        return None if blob is None else (blob.source or "")

    def kernel_push(self, folder: Path, accelerator: Optional[str], no_run: bool, ref, token: str, after: int):
        """Push the build folder; (PushReply, recovered). ``token`` is in its script, ``after`` the newest version before."""

        def send():
            return PushReply.of(self.api.kernels_push(str(folder), None, accelerator, no_run))

        def went_through():
            latest = self._kernel_get(ref)
            number = int(getattr(getattr(latest, "metadata", None), "current_version_number", 0) or 0)
            source = getattr(getattr(latest, "blob", None), "source", "") or ""
            return PushReply(number) if number > after and token in source else None

        return self.call_confirmed(
            f"push {ref}",
            send,
            went_through,
            not_found=f"check the kernel id {ref} in kernel-metadata.json (or --kernel)",
            forbidden=f"check that you own the kernel {ref} and that your account is phone-verified for GPU",
        )

    def kernel_status_get(self, ref, version: Optional[int]) -> KernelStatus:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        def get():
            request = ApiGetKernelSessionStatusRequest()
            request.user_name = ref.owner
            request.kernel_slug = ref.slug
            if version:
                request.version_label = f"v{int(version)}"
            with self.client() as kaggle:
                return kaggle.kernels.kernels_api_client.get_kernel_session_status(request)

        def known():
            try:
                return get()
            except KeyError as exc:  # the client's enum lacks the value Kaggle sent
                raise OddReply(f"unknown status {exc.args[0]!r} from Kaggle (a newer kaggle package may know it); "
                               "it is not recorded") from None

        label = f"{ref} v{version}" if version else str(ref)
        response = self.call(
            f"status of {label}",
            known,
            not_found=f"check the kernel id {ref} and the version {version}",
            forbidden=f"check that you own the kernel {ref}",
        )
        return KernelStatus(_enum_name(response.status), (response.failure_message or "").strip(), self.status_named)

    def kernel_log_stream(
        self, ref, version: int, on_event: Callable[[dict], None], skip: int = 0, deadline: Optional[float] = None
    ) -> int:
        """Follow the log of ``ref`` v<version> until it ends: ``on_event`` gets each event after the first ``skip``.

        The kaggle client's kernels_logs_stream: server-sent events while the session runs, the stored log after.
        Each read waits at most LORAKIT_STREAM_TIMEOUT_S (longer than the kernel's 60 s progress interval) and
        never past ``deadline`` (a time.monotonic()). A dropped connection, a silent stream, a 429 or a 5xx
        reconnects; the server replays from the start, so the events already handed on are skipped.
        LORAKIT_STREAM_RECONNECTS reconnects in a row without a new event end in a RemoteError. Returns how
        many events have been handed on in all (``skip`` included), at the stream's end or at ``deadline``.
        """
        self.api  # noqa: B018 - authenticate first
        label = f"{ref} v{version}"
        seen = skip
        failures = 0

        def hand_on(event: dict) -> None:  # the stream passes no reply_check: its text is redacted here
            on_event({**event, "data": self.redact(str(event["data"]))} if event.get("data") is not None else event)
        while True:
            before = seen
            try:
                with bounded(self.policy.stream_timeout, deadline, check=self.reply_check):
                    for index, event in enumerate(self.api.kernels_logs_stream(f"{ref}/{int(version)}")):
                        if index >= seen and isinstance(event, dict):
                            seen = index + 1
                            hand_on(event)
                        if deadline is not None and time.monotonic() >= deadline:
                            break  # a log that never pauses must not hold a --timeout
                return seen
            except LorakitError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_retryable(exc):
                    raise self._translate(
                        exc, f"stream the log of {label}", not_found="Kaggle serves no log stream for it"
                    ) from None
                if deadline is not None and time.monotonic() >= deadline:
                    return seen
                failures = 0 if seen > before else failures + 1
                why = f"silent for {self.policy.stream_timeout:g} s" if _is_timeout(exc) else _failure(exc)
                if failures > self.policy.stream_reconnects:
                    raise RemoteError(
                        f"the log stream of {label} dropped {failures} times in a row without a new line (last: "
                        f"{why})",
                        status=http_status(exc),
                    ) from None
                print(f"lorakit: the log stream of {label} dropped ({why}); reconnecting", file=self.log)
                time.sleep(self.policy.backoff(max(failures, 1)))

    def kernel_output_list(self, ref, version: Optional[int]) -> tuple[list[OutputFile], str]:
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        files: list[OutputFile] = []
        log = ""
        token = None
        label = f"{ref} v{version}" if version else str(ref)
        for _ in range(1000):
            def page(token=token):
                request = ApiListKernelSessionOutputRequest()
                request.user_name = ref.owner
                request.kernel_slug = ref.slug
                request.page_size = 100
                if token:
                    request.page_token = token
                if version:
                    request.version_label = f"v{int(version)}"
                with self.client() as kaggle:
                    return kaggle.kernels.kernels_api_client.list_kernel_session_output(request)

            response = self.call(
                f"list the output of {label}",
                page,
                not_found=f"check the kernel id {ref} and the version {version}",
                forbidden=f"check that you own the kernel {ref}",
            )
            before = len(files)
            for item in response.files or []:
                if item.file_name and item.url and item.file_name not in {f.name for f in files}:
                    files.append(OutputFile(item.file_name, item.url))
            if response.log and not log:
                log = response.log
            token = response.next_page_token
            if not token or len(files) == before:  # a server that ignores the token must not loop us
                break
        return files, log

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

    def file_download(self, url: str, dest: Path, what: str) -> None:
        """Download one output file; the body's reads keep the timeout its request was sent with."""
        import requests

        def fetch():
            response = requests.get(url, stream=True)  # the timeout comes from bounded()
            response.raise_for_status()
            return response

        response = self.call(f"download {what}", fetch, not_found=f"the output file {what} has gone; pull again")
        self._body_save(response, dest, what)

    def quota_get(self):
        return self.call("read the accelerator quota", lambda: self.api.quota_view())

    # -- datasets ------------------------------------------------------------------------------------------
    def _dataset_get(self, ref):
        """GetDataset; None on 404."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

        request = ApiGetDatasetRequest()
        request.owner_slug = ref.owner
        request.dataset_slug = ref.slug
        return self._none_on_404(lambda kaggle: kaggle.datasets.dataset_api_client.get_dataset(request))

    def dataset_description_get(self, ref) -> Optional[str]:
        """The description of dataset ``ref``; None when there is no such dataset."""
        dataset = self.call(f"read the dataset {ref}", lambda: self._dataset_get(ref))
        return None if dataset is None else (dataset.description or "")

    def dataset_status_get(self, ref) -> str:
        """Kaggle's processing status of dataset ``ref``'s newest version (READY once it can be attached)."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

        def get():
            request = ApiGetDatasetStatusRequest()
            request.owner_slug = ref.owner
            request.dataset_slug = ref.slug
            with self.client() as kaggle:
                return kaggle.datasets.dataset_api_client.get_dataset_status(request)

        return _enum_name(self.call(f"read the status of the dataset {ref}", get).status)

    def _blob_upload(self, path: Path) -> str:
        """Upload one file as a dataset blob (StartBlobUpload, then a PUT, both safe to repeat); its token."""
        from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest

        def start():
            request = ApiStartBlobUploadRequest()
            request.type = ApiBlobType.DATASET
            request.name = path.name
            request.content_length = path.stat().st_size
            request.last_modified_epoch_seconds = int(path.stat().st_mtime)
            with self.client() as kaggle:
                return kaggle.blobs.blob_api_client.start_blob_upload(request)

        upload = self.call(f"start the upload of {path.name}", start)
        self.call(f"upload {path.name}", lambda: _upload_put(upload.create_url, path))
        return upload.token

    def _blobs_upload(self, folder: Path) -> tuple[list, list]:
        """Upload a folder's files, subfolders kept as directories: (files, directories) of a dataset request.

        Hidden files are left out, as adapter_digest leaves them out.
        """
        from kagglesdk.datasets.types.dataset_api_service import ApiDatasetNewFile, ApiUploadDirectoryInfo

        files, directories = [], []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                directory = ApiUploadDirectoryInfo()
                directory.name = path.name
                directory.files, directory.directories = self._blobs_upload(path)
                directories.append(directory)
            elif path.is_file():
                new_file = ApiDatasetNewFile()
                new_file.token = self._blob_upload(path)
                files.append(new_file)
        return files, directories

    def dataset_publish(self, ref, folder: Path, title: str, description: str, exists: bool) -> bool:
        """Upload ``folder`` as a new private dataset ``ref``, or as a new version of it when it ``exists``.

        ``description`` must say which files these are (it carries their digest): it tells a lost reply that
        went through from one that did not (call_confirmed), so neither is ever created twice. Returns
        whether a lost reply was recovered.
        """
        from kagglesdk.datasets.types.dataset_api_service import (
            ApiCreateDatasetRequest,
            ApiCreateDatasetResponse,
            ApiCreateDatasetVersionRequest,
            ApiCreateDatasetVersionRequestBody,
        )

        files, directories = self._blobs_upload(folder)

        def send():
            with self.client() as kaggle:
                datasets = kaggle.datasets.dataset_api_client
                if exists:
                    body = ApiCreateDatasetVersionRequestBody()
                    body.version_notes = description
                    body.description = description
                    body.files, body.directories = files, directories
                    request = ApiCreateDatasetVersionRequest()
                    request.owner_slug, request.dataset_slug, request.body = ref.owner, ref.slug, body
                    return datasets.create_dataset_version(request)
                request = ApiCreateDatasetRequest()
                request.owner_slug, request.slug, request.title = ref.owner, ref.slug, title
                request.license_name = "CC0-1.0"
                request.is_private = True
                request.description = description
                request.files, request.directories = files, directories
                return datasets.create_dataset(request)

        def went_through():
            dataset = self._dataset_get(ref)
            return ApiCreateDatasetResponse() if dataset is not None and dataset.description == description else None

        response, recovered = self.call_confirmed(
            f"upload the adapter dataset {ref}",
            send,
            went_through,
            forbidden=f"check that the username in {ref} is yours",
        )
        error = (getattr(response, "error", "") or "").strip()
        if error:
            raise RemoteError(f"Kaggle refused the adapter dataset {ref}: {error}")
        return recovered

    # -- competitions --------------------------------------------------------------------------------------
    def _competition_advice(self, competition: str) -> dict:
        return dict(
            not_found=f"check the competition slug {competition!r} (competition_sources or --competition)",
            forbidden=f"accept the competition rules at https://www.kaggle.com/competitions/{competition}/rules",
        )

    def submission_limits_get(self, competition: str):
        return self.call(
            f"read today's submission limits of {competition}",
            lambda: self.api.competition_get_submission_limits(competition),
            **self._competition_advice(competition),
        )

    def submission_create(self, path: Path, description: str, competition: str, token: str) -> tuple[int, bool]:
        """Upload and submit ``path``; (submission ref, recovered). ``token`` is in ``description``.

        The steps of kaggle's competition_submit, so that only CreateSubmission, which must not run twice,
        goes through call_confirmed: StartSubmissionUpload and the PUT are safe to repeat.
        """
        from kagglesdk.competitions.types.competition_api_service import (
            ApiCreateSubmissionRequest,
            ApiStartSubmissionUploadRequest,
        )

        advice = self._competition_advice(competition)

        def start():
            request = ApiStartSubmissionUploadRequest()
            request.competition_name = competition
            request.file_name = path.name
            request.content_length = path.stat().st_size
            request.last_modified_epoch_seconds = int(path.stat().st_mtime)
            with self.client() as kaggle:
                return kaggle.competitions.competition_api_client.start_submission_upload(request)

        upload = self.call(f"start the upload of {path.name} to {competition}", start, **advice)
        try:
            self.call(f"upload {path.name}", lambda: _upload_put(upload.create_url, path))
        except RemoteError as exc:
            raise RemoteError(
                f"submit to {competition}: the upload of {path.name} failed ({exc}); nothing was submitted, try again",
                status=exc.status,
            ) from None

        def create():
            request = ApiCreateSubmissionRequest()
            request.competition_name = competition
            request.blob_file_tokens = upload.token
            request.submission_description = description
            with self.client() as kaggle:
                return kaggle.competitions.competition_api_client.create_submission(request)

        def went_through():
            newest = self._submissions_page(competition, "", 1).submissions or []
            return next((s for s in newest if s is not None and token in (s.description or "")), None)

        response, recovered = self.call_confirmed(f"submit {path.name} to {competition}", create, went_through, **advice)
        ref = int(getattr(response, "ref", 0) or 0)
        if not ref:
            raise RemoteError(
                f"submit to {competition}: Kaggle returned no submission ref ({getattr(response, 'message', '') or 'no message'})"
            )
        return ref, recovered

    def submission_get(self, ref: int, competition: str) -> Submission:
        from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

        def get():
            request = ApiGetSubmissionRequest()
            request.ref = int(ref)
            with self.client() as kaggle:
                return kaggle.competitions.competition_api_client.get_submission(request)

        return submission_from_api(
            self.call(f"read submission {ref}", get, **self._competition_advice(competition))
        )

    def _submissions_page(self, competition: str, token: str, page_number: int):
        """One page of ListSubmissions, newest first."""
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

        request = ApiListSubmissionsRequest()
        request.competition_name = competition
        request.page_size = 100
        if token:
            request.page_token = token
        else:
            request.page = page_number
        with self.client() as kaggle:
            return kaggle.competitions.competition_api_client.list_submissions(request)

    def submissions_list(self, competition: str) -> list[Submission]:
        result: list[Submission] = []
        token = ""
        for page_number in range(1, 101):
            response = self.call(
                f"list my submissions to {competition}",
                lambda token=token, page_number=page_number: self._submissions_page(competition, token, page_number),
                **self._competition_advice(competition),
            )
            seen = {s.ref for s in result}
            items = [submission_from_api(s) for s in response.submissions or [] if s is not None]
            items = [s for s in items if s.ref not in seen]
            result.extend(items)
            token = response.next_page_token or ""
            if not token or not items:  # no token, or a server that ignores it
                break
        return result

    def leaderboard_get(self, competition: str, pages: int, page_size: int = 100, enough=None):
        """Up to ``pages`` pages of the public leaderboard, as a list of (team_id, team_name, score, date).

        ``enough(rows)`` may end the paging early once the rows read so far suffice.
        """
        from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

        rows = []
        token = ""
        for _ in range(max(1, pages)):
            def page(token=token):
                request = ApiGetLeaderboardRequest()
                request.competition_name = competition
                request.page_size = page_size
                if token:
                    request.page_token = token
                with self.client() as kaggle:
                    return kaggle.competitions.competition_api_client.get_leaderboard(request)

            response = self.call(f"read the leaderboard of {competition}", page, **self._competition_advice(competition))
            before = len(rows)
            for item in response.submissions or []:
                date = getattr(item, "submission_date", None)
                if any(r[0] == int(item.team_id or 0) and r[1] == (item.team_name or "") for r in rows):
                    continue
                rows.append(
                    (
                        int(item.team_id or 0),
                        item.team_name or "",
                        _score(item.score),
                        date.date().isoformat() if hasattr(date, "date") else "",
                    )
                )
            token = response.next_page_token or ""
            if not token or len(rows) == before or (enough is not None and enough(rows)):
                break
        return rows

    def leaderboard_download(self, competition: str, folder: Path) -> Path:
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadLeaderboardRequest

        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{competition}.zip"

        clients = []

        def get():
            request = ApiDownloadLeaderboardRequest()
            request.competition_name = competition
            kaggle = self.client()  # kept open until the streamed body is read
            clients.append(kaggle)
            return kaggle.competitions.competition_api_client.download_leaderboard(request)

        response = self.call(f"download the leaderboard of {competition}", get, **self._competition_advice(competition))
        partial = folder / f".{competition}.zip.partial"
        try:
            self._body_save(response, partial, "the leaderboard")
            os.replace(partial, dest)
        finally:
            for kaggle in clients:
                kaggle.__exit__(None, None, None)
            for leftover in (partial, Path(str(partial) + ".kaggle-partial")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def _text_or_empty(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def json_loads_safe(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
