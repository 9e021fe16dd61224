"""Kaggle's endpoints lorakit uses, on the transport of :mod:`lorakit.transport`, which authenticates, bounds,
retries and checks every call: the kernels, their logs and outputs, and the quota here; the datasets and models
in :mod:`lorakit.remote_datasets`, the competitions, submissions and leaderboard in
:mod:`lorakit.remote_competitions`. :class:`Remote` holds them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lorakit.errors import LorakitError, RemoteError
from lorakit.retry import http_status, is_retryable
from lorakit.remote_competitions import CompetitionCalls
from lorakit.remote_datasets import DatasetCalls
from lorakit.timeouts import bounded
from lorakit.transport import OddReply, _failure, _is_timeout, enum_name, pages_read, server_words


@dataclass(frozen=True)
class OutputFile:
    name: str
    url: str


TOKEN_SEARCH_MAX = 200  # versions read to find a push by its token: more means lorakit sync, not a guess


@dataclass(frozen=True)
class KernelStatus:
    status: str
    failure_message: str = ""
    named: bool = True  # False when the reply named no status (read as QUEUED, the default): never recorded

    @property
    def shown(self) -> str:
        if self.named:
            return self.status
        if self.failure_message:
            return f"{self.status} (the reply named no status, but a failure: not recorded)"
        return f"{self.status} (the reply named no status: not recorded)"

    def as_json(self) -> dict:
        return {"status": self.status, "failure_message": self.failure_message or None, "status_named": self.named}


# What a SaveKernel reply may refuse of a version it created, in the order lorakit names them.
INVALID_FIELDS = ("invalid_dataset_sources", "invalid_competition_sources", "invalid_kernel_sources",
                  "invalid_model_sources", "invalid_tags")
LISTED_MAX = 20  # entries of one reply's list kept: the reply is untrusted


@dataclass(frozen=True)
class PushReply:
    """Kaggle's whole SaveKernel reply, each text one printable line."""

    version: int
    url: str = ""
    error: str = ""
    invalid: tuple = ()  # (a field of INVALID_FIELDS, (its entries, ...)) for each list the reply filled
    ref: str = ""  # the kernel the version was saved to, as the reply names it
    kernel_id: int = 0

    @classmethod
    def of(cls, response) -> "PushReply":
        invalid = tuple((name, tuple(server_words(str(v)) for v in entries[:LISTED_MAX]))
                        for name in INVALID_FIELDS if (entries := list(getattr(response, name, None) or [])))
        text = {key: server_words(str(getattr(response, key, "") or "")) for key in ("url", "error", "ref")}
        return cls(int(getattr(response, "version_number", 0) or 0), text["url"], text["error"], invalid,
                   text["ref"], int(getattr(response, "kernel_id", 0) or 0))


@dataclass(frozen=True)
class PushSettings:
    """How a build folder is pushed: the machine shape (None: the metadata's), a quick save without a run, and
    the session_timeout_seconds at which Kaggle stops the run (None: Kaggle's own maximum)."""

    accelerator: Optional[str] = None
    no_run: bool = False
    session_timeout_s: Optional[int] = None


@dataclass(frozen=True)
class KernelLatest:
    """What GetKernel says of a kernel: its newest version (0: no such kernel), its id, and the Docker image and
    machine shape of its latest session (Kaggle describes that one only)."""

    version: int
    kernel_id: int = 0
    docker_image: str = ""
    machine_shape: str = ""


class Remote(DatasetCalls, CompetitionCalls):
    """Kaggle's endpoints, each a method named resource_verb, on one authenticated transport."""

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

    def kernel_latest_get(self, ref) -> KernelLatest:
        """GetKernel's word on kernel ``ref``: its newest version (0 when it does not exist yet) and the rest."""
        response = self.call(
            f"read the newest version of {ref}",
            lambda: self._kernel_get(ref),
            forbidden=f"check that you own the kernel {ref}",
        )
        metadata = getattr(response, "metadata", None)
        words = {key: server_words(str(getattr(metadata, key, "") or "")) for key in ("docker_image", "machine_shape")}
        return KernelLatest(int(getattr(metadata, "current_version_number", 0) or 0),
                            int(getattr(metadata, "id", 0) or 0), **words)

    def kernel_version_latest(self, ref) -> int:
        """The newest version number of kernel ``ref`` (0 when it does not exist yet)."""
        return self.kernel_latest_get(ref).version

    def kernel_found(self, ref, version: Optional[int] = None) -> bool:
        """Whether kernel ``ref`` (its ``version``) exists and is readable: a kernel source looked up."""
        return self.call(f"look up the kernel {ref}", lambda: self._kernel_get(ref, version)) is not None

    def kernel_source_get(self, ref, version: int) -> Optional[str]:
        """The script of version ``version`` of ``ref`` as Kaggle holds it; None when there is no such version."""
        response = self.call(
            f"read the source of {ref} v{version}",
            lambda: self._kernel_get(ref, version),
            forbidden=f"check that you own the kernel {ref}",
        )
        blob = getattr(response, "blob", None)
        return None if blob is None else (blob.source or "")

    def kernel_push(self, folder: Path, settings: PushSettings, ref, token: str, after: int):
        """Push the build folder; (PushReply, recovered). ``token`` is in its script, ``after`` the newest version before."""
        timeout = None if settings.session_timeout_s is None else str(int(settings.session_timeout_s))

        def send():
            return PushReply.of(self.api.kernels_push(str(folder), timeout, settings.accelerator, settings.no_run))

        def went_through():  # another push may have landed meanwhile: every version above ``after`` is looked at
            number = self._token_version(ref, token, after)
            return None if number is None else PushReply(number)

        return self.call_confirmed(
            f"push {ref}",
            send,
            went_through,
            not_found=f"check the kernel id {ref} in kernel-metadata.json (or --kernel)",
            forbidden=f"check that you own the kernel {ref} and that your account is phone-verified for GPU",
        )

    # -- a push found again by its token (issue 22) ------------------------------------------------------------
    def _token_version(self, ref, token: str, after: int) -> Optional[int]:
        """The version above ``after`` whose source holds ``token`` (newest first; None: none does yet). More
        than TOKEN_SEARCH_MAX versions to read is a RemoteError: what cannot be looked at is never "not there"."""
        latest = int(getattr(getattr(self._kernel_get(ref), "metadata", None), "current_version_number", 0) or 0)
        if latest - after > TOKEN_SEARCH_MAX:
            raise RemoteError(f"{ref} has {latest - after} versions above v{after}, more than lorakit reads to find "
                              f"a push ({TOKEN_SEARCH_MAX}); lorakit sync reads them all")
        for number in range(latest, after, -1):
            source = getattr(getattr(self._kernel_get(ref, number), "blob", None), "source", None) or ""
            if token and token in source:
                return number
        return None

    def kernel_version_of_token(self, ref, token: str, after: int) -> Optional[int]:
        """The version of ``ref`` above ``after`` that a push marked with ``token`` became; None: none (yet)."""
        return self.call(f"look for the push {token} among the versions of {ref} above v{after}",
                         lambda: self._token_version(ref, token, after),
                         forbidden=f"check that you own the kernel {ref}")

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
        failure = (response.failure_message or "").strip()
        if failure and not self.status_named:  # a failure all the same: never read as the default QUEUED
            return KernelStatus("ERROR", failure, False)
        return KernelStatus(enum_name(response.status), failure, self.status_named)

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
        """The output files of ``ref`` v<version> (every page) and its log (the first page that holds one)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        logs: list[str] = []
        label = f"{ref} v{version}" if version else str(ref)

        def page(token: str, _number: int):
            request = ApiListKernelSessionOutputRequest()
            request.user_name = ref.owner
            request.kernel_slug = ref.slug
            request.page_size = 100
            if token:
                request.page_token = token
            if version:
                request.version_label = f"v{int(version)}"

            def get():
                with self.client() as kaggle:
                    return kaggle.kernels.kernels_api_client.list_kernel_session_output(request)

            response = self.call(f"list the output of {label}", get,
                                 not_found=f"check the kernel id {ref} and the version {version}",
                                 forbidden=f"check that you own the kernel {ref}")
            logs.append(response.log or "")
            return response

        def files_of(response) -> list:
            return [OutputFile(f.file_name, f.url) for f in response.files or [] if f.file_name and f.url]

        files = pages_read(page, files_of, key=lambda f: f.name, limit=1000)
        return files, next((log for log in logs if log), "")

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
