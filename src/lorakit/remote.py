"""Kaggle's endpoints lorakit uses (kernels, their logs and outputs, datasets, submissions, the leaderboard), on
the transport of :mod:`lorakit.transport`, which authenticates, bounds, retries and checks every call.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Callable, Optional

from lorakit.errors import LorakitError, RemoteError
from lorakit.retry import http_status, is_retryable
from lorakit.timeouts import bounded
from lorakit.transport import OddReply, Transport, _failure, _is_timeout, pages_read, server_words


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


def _day_of(item) -> str:
    """The date of a leaderboard entry's submission, ISO; "" when Kaggle sent none."""
    date = getattr(item, "submission_date", None)
    return date.date().isoformat() if hasattr(date, "date") else ""


def _enum_name(value) -> str:
    return getattr(value, "name", None) or str(value or "")


def utc_text(date) -> str:
    """A reply's time as ISO 8601 UTC with its Z (kagglesdk reads Kaggle's "...Z" into a naive datetime)."""
    if not hasattr(date, "isoformat"):
        return str(date or "")
    if getattr(date, "tzinfo", None) is not None:
        date = date.astimezone(timezone.utc).replace(tzinfo=None)
    return date.isoformat(timespec="seconds") + "Z"


def submission_from_api(item) -> Submission:
    date = getattr(item, "date", None)
    return Submission(
        ref=int(getattr(item, "ref", 0) or 0),
        status=_enum_name(getattr(item, "status", "")),
        public_score=_score(getattr(item, "public_score", None)),
        private_score=_score(getattr(item, "private_score", None)),
        description=getattr(item, "description", None) or "",
        date=utc_text(date),
        error=(getattr(item, "error_description", None) or "").strip(),
        team_name=getattr(item, "team_name", None) or "",
    )


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


def _upload_put(url: str, path: Path) -> None:
    """PUT the file to its upload URL, as kaggle's upload_complete does without a resume.

    Not upload_complete itself: it retries a stalled PUT ten times inside one call, beyond any budget.
    """
    import requests

    with open(path, "rb") as handle:
        response = requests.put(url, data=handle)  # the timeout comes from bounded()
    response.raise_for_status()

class Remote(Transport):
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
        return KernelStatus(_enum_name(response.status), failure, self.status_named)

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

    def dataset_versions_get(self, ref) -> Optional[int]:
        """The newest version number of dataset ``ref``; None when there is no such dataset (a source looked up)."""
        dataset = self.call(f"look up the dataset {ref}", lambda: self._dataset_get(ref))
        return None if dataset is None else int(getattr(dataset, "current_version_number", 0) or 0)

    def model_instance_versions_get(self, owner: str, model: str, framework: str, instance: str) -> Optional[int]:
        """The newest version number of a model instance (GetModelInstance); None when there is none."""
        from kagglesdk.models.types.model_api_service import ApiGetModelInstanceRequest
        from kagglesdk.models.types.model_enums import ModelFramework

        request = ApiGetModelInstanceRequest()
        request.owner_slug, request.model_slug, request.instance_slug = owner, model, instance
        try:
            request.framework = self.api.lookup_enum(ModelFramework, ModelFramework.MODEL_FRAMEWORK_API, framework)
        except KeyError:
            return None  # no framework of that name: no such instance
        found = self.call(f"look up the model {owner}/{model}/{framework}/{instance}", lambda: self._none_on_404(
            lambda kaggle: kaggle.models.model_api_client.get_model_instance(request)))
        return None if found is None else int(getattr(found, "version_number", 0) or 0)

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

    def competition_get(self, competition: str):
        """GetCompetition: what Kaggle says of ``competition`` (whether I entered, its deadline); None on 404."""
        from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

        request = ApiGetCompetitionRequest()
        request.competition_name = competition
        return self.call(f"read the competition {competition}", lambda: self._none_on_404(
            lambda kaggle: kaggle.competitions.competition_api_client.get_competition(request)))

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

    def _submissions_page(self, competition: str, token: str, page_number: int, selected: bool = False):
        """One page of ListSubmissions, newest first (with ``selected``, those picked for the private leaderboard)."""
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest
        from kagglesdk.competitions.types.competition_enums import SubmissionGroup

        request = ApiListSubmissionsRequest()
        request.competition_name = competition
        if selected:
            request.group = SubmissionGroup.SUBMISSION_GROUP_SELECTED
        request.page_size = 100
        if token:
            request.page_token = token
        else:
            request.page = page_number
        with self.client() as kaggle:
            return kaggle.competitions.competition_api_client.list_submissions(request)

    def submissions_list(self, competition: str) -> list[Submission]:
        """My submissions to ``competition`` (every page, up to 100), newest first."""

        def page(token: str, number: int):
            return self.call(f"list my submissions to {competition}",
                             lambda: self._submissions_page(competition, token, number),
                             **self._competition_advice(competition))

        def submissions_of(response) -> list:
            return [submission_from_api(s) for s in response.submissions or [] if s is not None]

        return pages_read(page, submissions_of, key=lambda s: s.ref, limit=100)

    def submissions_selected(self, competition: str) -> list[int]:
        """The refs of my submissions selected for the private leaderboard (at most a page: Kaggle allows two)."""
        response = self.call(f"list my selected submissions to {competition}",
                             lambda: self._submissions_page(competition, "", 1, selected=True),
                             **self._competition_advice(competition))
        return [int(s.ref or 0) for s in response.submissions or [] if s is not None and s.ref]

    def leaderboard_get(self, competition: str, pages: int, enough=None) -> list:
        """Up to ``pages`` pages of the public leaderboard, as a list of (team_id, team_name, score, date).

        ``enough(rows)`` may end the paging early once the rows read so far suffice.
        """
        from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

        def page(token: str, _number: int):
            request = ApiGetLeaderboardRequest()
            request.competition_name = competition
            request.override_public = True  # the public board, which the command is labelled as, even once a private one exists
            request.page_size = 100
            if token:
                request.page_token = token

            def get():
                with self.client() as kaggle:
                    return kaggle.competitions.competition_api_client.get_leaderboard(request)

            return self.call(f"read the leaderboard of {competition}", get, **self._competition_advice(competition))

        def rows_of(response) -> list:
            return [(int(item.team_id or 0), item.team_name or "", _score(item.score), _day_of(item))
                    for item in response.submissions or []]

        return pages_read(page, rows_of, key=lambda row: row[:2], limit=pages, enough=enough)

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

