"""Kaggle access through the official ``kaggle`` package (``KaggleApi`` and its kagglesdk client).

``kaggle`` is imported lazily: it authenticates on import and prints to stdout when it finds no
credentials, so the import happens with stdout captured, on the first call that needs the network.
Every call goes through :func:`lorakit.retry.call_with_retry` and every failure becomes a one-line
:class:`RemoteError` with advice for the status code. Secrets never appear in a message.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lorakit.errors import RemoteError
from lorakit.retry import GaveUp, RetryPolicy, call_with_retry, http_status, is_connection_error

CREDENTIALS_ADVICE = (
    "put your API credentials in ~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR/kaggle.json), "
    "or set KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
)


@dataclass(frozen=True)
class OutputFile:
    name: str
    url: str


@dataclass(frozen=True)
class KernelStatus:
    status: str
    failure_message: str = ""


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


class Remote:
    """One authenticated KaggleApi, plus retries and error translation."""

    def __init__(self, policy: Optional[RetryPolicy] = None, log=None):
        self.policy = policy or RetryPolicy.from_env()
        self.log = sys.stderr if log is None else log
        self._api = None
        self._secrets: list[str] = []
        self.kaggle_output = io.StringIO()  # what the kaggle package printed; shown with LORAKIT_VERBOSE=1

    # -- setup -----------------------------------------------------------------------------------------
    def _quiet(self):
        return contextlib.redirect_stdout(self.kaggle_output)

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
        with self._quiet():
            try:
                from kaggle.api.kaggle_api_extended import KaggleApi
            except ImportError:
                raise RemoteError("the kaggle package is not installed: pip install 'kaggle>=2.2.5'") from None
            except SystemExit:  # pragma: no cover - kaggle swallows it, but be safe
                raise RemoteError(f"Kaggle credentials are missing: {CREDENTIALS_ADVICE}", status=401)
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
        for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
            if os.environ.get(name):
                self._secrets.append(os.environ[name])
        try:
            with self._quiet():
                api.authenticate()
        except SystemExit:
            raise RemoteError(f"no Kaggle credentials found: {CREDENTIALS_ADVICE}", status=401)
        except Exception as exc:  # noqa: BLE001 - token introspection may fail on the network
            raise self._translate(exc, "authenticate")
        finally:
            self.kaggle_output.seek(0)
            self.kaggle_output.truncate()
        for key in ("key", "token"):
            value = api.config_values.get(key)
            if value:
                self._secrets.append(str(value))
        return api

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    @property
    def username(self) -> str:
        name = self.api.config_values.get("username") or ""
        if not name:
            raise RemoteError(f"could not tell the Kaggle username from the credentials: {CREDENTIALS_ADVICE}")
        return name

    # -- error handling ------------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, what: str, not_found: str = "", forbidden: str = "") -> RemoteError:
        attempts = ""
        if isinstance(exc, GaveUp):
            attempts = f" (gave up after {exc.attempts} attempt(s), {exc.elapsed:.0f} s: {exc.reason})"
            exc = exc.last
        status = http_status(exc)
        if status == 401:
            msg = f"{what}: Kaggle rejected the credentials (401); {CREDENTIALS_ADVICE}"
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
        elif is_connection_error(exc):
            msg = f"{what}: could not reach Kaggle{attempts} ({type(exc).__name__}); check your network or proxy"
        else:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            msg = f"{what}: {detail}"
        return RemoteError(self.redact(msg), status=status)

    def call(self, what: str, fn: Callable, not_found: str = "", forbidden: str = ""):
        """Run ``fn()`` (which uses the kaggle API) with retries and error translation."""
        self.api  # noqa: B018 - authenticate first, outside the retry loop
        try:
            with self._quiet():
                return call_with_retry(fn, self.policy, what, log=self.log)
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, what, not_found, forbidden) from None
        finally:
            self._flush_kaggle_output()

    def client(self):
        return self.api.build_kaggle_client()

    # -- kernels -------------------------------------------------------------------------------------------
    def kernel_push(self, folder: Path, accelerator: Optional[str], no_run: bool, ref: str):
        def push():
            return self.api.kernels_push(str(folder), None, accelerator, no_run)

        return self.call(
            f"push {ref}",
            push,
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

        label = f"{ref} v{version}" if version else str(ref)
        response = self.call(
            f"status of {label}",
            get,
            not_found=f"check the kernel id {ref} and the version {version}",
            forbidden=f"check that you own the kernel {ref}",
        )
        return KernelStatus(_enum_name(response.status), (response.failure_message or "").strip())

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

    def file_download(self, url: str, dest: Path, what: str) -> None:
        """Download one output file through the kaggle client's downloader (size checked, resumable)."""
        import requests

        def fetch():
            response = requests.get(url, stream=True, timeout=300)
            response.raise_for_status()
            return response

        response = self.call(f"download {what}", fetch, not_found=f"the output file {what} has gone; pull again")
        try:
            with self._quiet():
                self.api.download_file(
                    response, str(dest), None, quiet=True, resume=False, max_retries=self.policy.download_retries
                )
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(self.redact(f"download of {what} failed ({type(exc).__name__}: {_first_line(exc)})"))
        finally:
            response.close()
            self._flush_kaggle_output()

    def quota_get(self):
        return self.call("read the accelerator quota", lambda: self.api.quota_view())

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

    def submission_create(self, path: Path, message: str, competition: str) -> int:
        def submit():
            return self.api.competition_submit(str(path), message, competition, quiet=True)

        response = self.call(f"submit {path.name} to {competition}", submit, **self._competition_advice(competition))
        if getattr(response, "message", "") == self.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            raise RemoteError(f"submit to {competition}: the upload of {path} failed; nothing was submitted, try again")
        ref = int(getattr(response, "ref", 0) or 0)
        if not ref:
            raise RemoteError(
                f"submit to {competition}: Kaggle returned no submission ref ({getattr(response, 'message', '') or 'no message'})"
            )
        return ref

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

    def submissions_list(self, competition: str) -> list[Submission]:
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

        result: list[Submission] = []
        token = ""
        for page_number in range(1, 101):
            def page(token=token, page_number=page_number):
                request = ApiListSubmissionsRequest()
                request.competition_name = competition
                request.page_size = 100
                if token:
                    request.page_token = token
                else:
                    request.page = page_number
                with self.client() as kaggle:
                    return kaggle.competitions.competition_api_client.list_submissions(request)

            response = self.call(f"list my submissions to {competition}", page, **self._competition_advice(competition))
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
            with self._quiet():
                self.api.download_file(
                    response, str(partial), None, quiet=True, resume=False, max_retries=self.policy.download_retries
                )
            os.replace(partial, dest)
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(self.redact(f"download of the leaderboard failed ({type(exc).__name__}: {_first_line(exc)})"))
        finally:
            response.close()
            for kaggle in clients:
                kaggle.__exit__(None, None, None)
            for leftover in (partial, Path(str(partial) + ".kaggle-partial")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            self._flush_kaggle_output()
        return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def json_loads_safe(text: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
