"""Kaggle's competition endpoints lorakit uses (the competition, its submissions and their limits, the
leaderboard), on the transport of :mod:`lorakit.transport`; a part of :class:`lorakit.remote.Remote`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Optional

from lorakit.errors import RemoteError
from lorakit.remote_datasets import upload_put
from lorakit.transport import Transport, enum_name, pages_read


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
        status=enum_name(getattr(item, "status", "")),
        public_score=_score(getattr(item, "public_score", None)),
        private_score=_score(getattr(item, "private_score", None)),
        description=getattr(item, "description", None) or "",
        date=utc_text(date),
        error=(getattr(item, "error_description", None) or "").strip(),
        team_name=getattr(item, "team_name", None) or "",
    )


class CompetitionCalls(Transport):
    """Kaggle's competition endpoints, each a method named resource_verb."""

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
            self.call(f"upload {path.name}", lambda: upload_put(upload.create_url, path))
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
