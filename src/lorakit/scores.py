"""`lorakit scores` and `lorakit leaderboard`: my submissions matched to their versions and recorded, the
candidates and the final picks (those selected for the private leaderboard) marked; the public leaderboard with
my rank.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from lorakit.common import (
    NOT_SUBMITTED, UNCONFIRMED, ledger_of, output_path_check, predicted_on, submission_columns, submission_key,
    submission_preferred, utc_now,
)
from lorakit.console import CSV, JSON, command, err, flag, fmt, note, plural, one_format, project_of, remote_new, table, warn
from lorakit.errors import ArgumentError, RemoteError, UsageError
from lorakit.inflight import UNSETTLED, unsettled_of, unsettled_words
from lorakit.ledger import Ledger
from lorakit.ledger import kernel_same
from lorakit.preflight import COMPETITION_URL, competition_read
from lorakit.project import KernelRef, Project
from lorakit.remote import Remote
from lorakit.remote_competitions import Submission
from lorakit.runs import noise_words, paired_test, pulled_run_load
from lorakit.stats import LEVEL, finite_number, rows_to_tell, two_proportions_p
from lorakit.transport import json_loads_safe


@dataclass(frozen=True)
class ScoreRow:
    version: Optional[int]
    submission: Submission
    val_accuracy: Optional[float]
    overrides: str
    message: str
    kernel: str = ""  # the kernel of the version (owner/slug); "" when no version is known

    @property
    def gap(self) -> Optional[float]:
        s = self.submission
        if s.public_score is None or s.private_score is None:
            return None
        return round(s.public_score - s.private_score, 6)


@dataclass(frozen=True)
class Picks:
    """My submissions selected for the private leaderboard, and what to say of them."""

    selected: tuple = ()  # their refs
    warning: str = ""  # none is selected and the deadline is near
    note: str = ""  # they could not be read


@dataclass(frozen=True)
class Scores:
    rows: tuple
    best_public: Optional[ScoreRow]
    best_validation: Optional[dict]  # ledger row
    unrecorded: tuple = ()  # versions named by submissions but absent from the ledger
    not_submitted: tuple = ()  # versions whose unconfirmed submission turned out never to have reached Kaggle
    not_candidates: tuple = ()  # (version, kernel, what it predicted on): runs that are not real runs
    unsettled: tuple = ()  # (version, words): submissions in flight or not found on Kaggle yet, left as they are
    picks: Picks = Picks()  # the final picks
    noise: str = ""  # why the best validation candidate cannot be told from the next one ("" when it can)

    def as_json(self) -> dict:
        picks = self.picks
        return {
            "submissions": [
                {**r.submission.as_json(), "version": r.version, "kernel": r.kernel or None, "gap": r.gap,
                 "val_accuracy": r.val_accuracy, "message": r.message,
                 "overrides": json_loads_safe(r.overrides) if r.overrides else None,
                 "selected": r.submission.ref in picks.selected}
                for r in self.rows
            ],
            "selected": list(picks.selected),
            "selection_warning": picks.warning or None,
            "best_public": None if self.best_public is None else self.best_public.version,
            "best_validation": None if self.best_validation is None else int(self.best_validation["version"]),
            "unrecorded": list(self.unrecorded),
            "not_submitted": list(self.not_submitted),
            "unsettled": [{"version": v, "why": w} for v, w in self.unsettled],
            "not_candidates": [{"version": v, "kernel": k, "predicted_on": w} for v, k, w in self.not_candidates],
            "noise": self.noise or None,
        }


def _scores_record(ledger: Ledger, chosen: dict, verdicts: dict) -> None:
    """Write each version's chosen submission, and what was found of the unsettled ones not seen on Kaggle:
    NOT_SUBMITTED once that is final (inflight's rule), only while the row still holds the submission judged."""
    with ledger.transaction() as records:
        for record in records:
            key = (record["kernel_ref"], int(record["version"])) if record["version"] else None
            judged = verdicts.get(key)
            if judged is not None and record.get("pending_token", "") == judged[0]:
                record.update(judged[1].fields)
                if judged[1].final:  # an older lorakit recorded it in submission_status
                    record["pending_status" if record.get("pending_token") else "submission_status"] = NOT_SUBMITTED
            sub = chosen.get(key)
            if sub is None:
                continue
            if record.get("pending_token") and record["pending_token"] in sub.description:
                record.update(submission_token=record["pending_token"], submitted_at=sub.date or utc_now(),
                              pending_token="", pending_status="")
            record.update(submission_columns(sub))


SELECTION_DAYS = 7  # in the last days before the deadline, scores says when no submission is a final pick


def final_picks(remote: Remote, competition: str, any_submission: bool) -> Picks:
    """ListSubmissions' SELECTED group; when none is selected, one GetCompetition for the deadline: within
    SELECTION_DAYS days of it, a warning that Kaggle will pick by the public score."""
    try:
        selected = tuple(remote.submissions_selected(competition))
    except RemoteError as exc:
        return Picks(note=f"could not read which submissions are selected for the private leaderboard ({exc})")
    if selected or not any_submission:
        return Picks(selected)
    deadline = competition_read(remote, competition).deadline
    days = None if deadline is None else (deadline - datetime.now(timezone.utc)).total_seconds() / 86400
    if days is None or not 0 < days <= SELECTION_DAYS:
        return Picks(selected)
    return Picks(selected, f"none of your submissions is selected for the private leaderboard and the deadline is in "
                           f"{days:.1f} days ({deadline:%Y-%m-%d %H:%M} UTC): select up to two at "
                           f"{COMPETITION_URL.format(competition)}/submissions (else Kaggle picks those with the "
                           "best public scores)")


def scores_get(project: Project, remote: Remote) -> Scores:
    """My submissions, each matched to its (kernel, version); the ledger updated; candidates among real runs."""
    home = project.kernel  # a placeholder owner matches my own kernels by their slug
    ledger = ledger_of(project)
    ledger.check_writable()
    submissions = remote.submissions_list(project.competition)
    rows = {(r["kernel_ref"], int(r["version"])): r for r in ledger.all_rows() if r["version"]}
    chosen: dict = {}
    result: list[ScoreRow] = []
    for sub in submissions:
        key = submission_key(sub, rows, str(home))
        row = rows.get(key, {})
        if key is not None and submission_preferred(row, sub, chosen.get(key)):
            chosen[key] = sub
        result.append(ScoreRow(key and key[1], sub, finite_number(row.get("val_accuracy")), row.get("overrides", ""),
                               row.get("message", ""), key[0] if key else ""))
    verdicts = _unsettled_verdicts(rows, chosen, remote.policy.confirm_time)
    lost = {k for k, (_token, state) in verdicts.items() if state.final}
    if verdicts or any(k in rows for k in chosen):
        _scores_record(ledger, {k: s for k, s in chosen.items() if k in rows}, verdicts)
    result.sort(key=lambda r: (r.submission.public_score is None, -(r.submission.public_score or 0.0), -r.submission.ref))
    seen_on = {k: predicted_on(project, k[1], r, KernelRef.parse_or_none(k[0])) for k, r in rows.items()}
    real = {k for k, (kind, _words) in seen_on.items() if kind in (None, "competition")}
    best_public = next((r for r in result if r.submission.public_score is not None and r.version is not None
                        and (r.kernel, r.version) in real), None)
    with_val = [r for r in ledger.all_rows() if r["version"] and finite_number(r.get("val_accuracy")) is not None
                and (r["kernel_ref"], int(r["version"])) in real]
    with_val.sort(key=lambda r: (finite_number(r["val_accuracy"]), int(r["version"])), reverse=True)
    best_val = with_val[0] if with_val else None
    shown = {k for k in chosen} | {k for k in rows if finite_number(rows[k].get("val_accuracy")) is not None}
    not_candidates = tuple((k[1], k[0], seen_on[k][1]) for k in sorted(shown) if k in rows and k not in real)
    unrecorded = tuple(sorted(k[1] for k in chosen if k not in rows))
    waiting = tuple((k[1], unsettled_words({**rows[k], **state.fields}, _status(rows[k]), "submitted",
                                           remote.policy.confirm_time))
                    for k, (_token, state) in sorted(verdicts.items()) if not state.final)
    picks = final_picks(remote, project.competition, bool(submissions))
    return Scores(tuple(result), best_public, best_val, unrecorded, tuple(sorted(k[1] for k in lost)), not_candidates,
                  waiting, picks, candidates_noise(project, with_val[:2]))


def _status(row: dict) -> str:
    """The status of a row's unsettled submission (an older lorakit kept it in submission_status)."""
    return row.get("pending_status") or row.get("submission_status") or ""


def _unsettled_verdicts(rows: dict, chosen: dict, grace: float) -> dict:
    """key -> (pending token, inflight.Unsettled) of each row whose unsettled submission Kaggle does not show."""
    unsettled = {k for k, r in rows.items() if r.get("pending_status") in UNSETTLED
                 or (r.get("submission_status") == UNCONFIRMED and not r.get("submission_ref"))}
    return {k: (rows[k].get("pending_token", ""), unsettled_of(rows[k], _status(rows[k]),
                                                               rows[k].get("pending_token", ""), grace))
            for k in sorted(unsettled) if k not in chosen or not _settles(rows[k], chosen[k])}


def candidates_noise(project: Project, best_two: list) -> str:
    """Why the best validation candidate cannot be told from the next (the paired test when both are pulled
    here on the same rows, else their accuracies on their rows); "" when it can, or when it is not known."""
    if len(best_two) < 2 or not all(kernel_same(r["kernel_ref"], str(project.kernel)) for r in best_two):
        return ""
    a, b = (int(r["version"]) for r in best_two)
    with contextlib.suppress(UsageError):
        return noise_words(f"v{a}", f"v{b}", paired_test(pulled_run_load(project, a), pulled_run_load(project, b)))
    (pa, na), (pb, nb) = ((finite_number(r["val_accuracy"]), finite_number(r.get("val_rows"))) for r in best_two)
    if not na or not nb or two_proportions_p(pa, int(na), pb, int(nb)) < LEVEL:
        return ""
    need = rows_to_tell(pa, pb)
    return (f"v{a}'s and v{b}'s validation accuracies ({pa:.4f} on {int(na):,} rows, {pb:.4f} on {int(nb):,}) cannot "
            "be told apart" + (f"; roughly {need:,} rows each would" if need else ""))


def _settles(row: dict, sub: Submission) -> bool:
    """Whether ``sub`` is the unconfirmed submission of ``row`` (its pending token, or an older lorakit's)."""
    token = row.get("pending_token") or row.get("submission_token") or ""
    return bool(token) and token in sub.description


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArgumentError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def scores_plot_check(path) -> Path:
    """--plot PATH, checked before the scores are read: matplotlib at hand and the path writable."""
    _pyplot()
    return output_path_check(path, "--plot")


def scores_plot(project: Project, path: Path) -> Path:
    """PNG of public score and validation accuracy by version, from the ledger."""
    plt = _pyplot()
    rows = ledger_of(project).rows()
    versions = [int(r["version"]) for r in rows]
    public = [finite_number(r.get("public_score")) for r in rows]
    val = [finite_number(r.get("val_accuracy")) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    pv = [(v, s) for v, s in zip(versions, public) if s is not None]
    vv = [(v, s) for v, s in zip(versions, val) if s is not None]
    if pv:
        ax.plot(*zip(*pv), "o-", label="public score")
    if vv:
        ax.plot(*zip(*vv), "s--", label="validation accuracy")
    ax.set(xlabel="kernel version", ylabel="accuracy", title=f"{project.competition}")
    if pv or vv:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write it ({exc.strerror or type(exc).__name__})") from None
    finally:
        plt.close(fig)
    return path


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int
    team_id: int
    team_name: str
    score: Optional[float]
    date: str
    mine: bool

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def leaderboard_get(project: Project, remote: Remote, top: int = 20, download: Optional[Path] = None):
    if top < 1:
        raise ArgumentError("--top must be positive")
    if download:
        output_path_check(download, "--download", folder=True)
    zip_path = remote.leaderboard_download(project.competition, Path(download)) if download else None
    mine_names = set()
    with contextlib.suppress(RemoteError):
        mine_names = {s.team_name for s in remote.submissions_list(project.competition) if s.team_name}
    if not mine_names:
        mine_names = {remote.username}

    def enough(rows) -> bool:  # stop paging once the top rows and my own row are read
        return len(rows) >= top and any(name in mine_names for _, name, _, _ in rows)

    rows = remote.leaderboard_get(project.competition, pages=max(1, (top + 99) // 100) + 9, enough=enough)  # public
    ranked = [
        LeaderboardRow(i + 1, tid, name, score, date, name in mine_names)
        for i, (tid, name, score, date) in enumerate(rows)
    ]
    shown = ranked[:top]
    me = next((r for r in ranked if r.mine), None)
    return shown, me, zip_path


# ------------------------------------------------------------------------------------- the command line
@command(
    "scores",
    "my submissions and scores, written into the ledger; best candidates marked",
    CSV,
    flag("--plot", metavar="PATH", help="write a PNG of public score and validation accuracy by version"),
    JSON,
)
def cmd_scores(args) -> int:
    one_format(args)
    out = args.out
    project = project_of(args)
    if args.plot:
        scores_plot_check(args.plot)
    scores = scores_get(project, remote_new())
    headers = ["mark", "version", "ref", "status", "public", "private", "gap", "val_acc", "date", "overrides"]
    rows = _scores_rows(project, scores)
    out.document(scores.as_json())
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        out.text(buffer.getvalue())
    elif not rows:
        out.result(f"no submissions to {project.competition} yet")
    else:
        out.result(table(headers, rows))
        out.result("")
        _candidates_show(out, project, scores)
    _scores_notes(project, scores)
    if args.plot:
        err(f"lorakit: wrote {scores_plot(project, args.plot)}")
    return 0


def _scores_rows(project, scores: Scores) -> list:
    """The table's rows, each marked P (best public score), V (best validation), S (selected)."""
    rows = []
    best_val_version = int(scores.best_validation["version"]) if scores.best_validation else None
    for r in scores.rows:
        s = r.submission
        mark = "P" if scores.best_public is not None and r is scores.best_public else ""
        if scores.best_validation is not None and r.version == best_val_version and kernel_same(
                r.kernel, scores.best_validation["kernel_ref"]):
            mark += "V"
        mark += "S" if s.ref in scores.picks.selected else ""
        rows.append([mark, version_label(project, r.version, r.kernel), s.ref, s.status,
                     fmt(s.public_score, 5), fmt(s.private_score, 5), fmt(r.gap, 5), fmt(r.val_accuracy),
                     s.date[:16].replace("T", " "), r.overrides or ""])
    return rows


def _candidates_show(out, project, scores: Scores) -> None:
    """The candidates for the final submissions, the noise between them, and the submissions selected."""
    if scores.best_public is not None:
        b = scores.best_public
        out.result(f"P best public score:  {version_label(project, b.version, b.kernel)} "
                   f"({fmt(b.submission.public_score, 5)})")
    if scores.best_validation is not None:
        v = scores.best_validation
        out.result(f"V best validation:    {version_label(project, int(v['version']), v['kernel_ref'])} "
                   f"({fmt(v.get('val_accuracy'))})")
    if scores.noise:
        out.result(f"  noise: {scores.noise}")
    if scores.best_public is not None or scores.best_validation is not None:
        out.result("  -> the candidates for the two final submissions")
    if scores.picks.selected:
        out.result(f"S selected for the private leaderboard: {plural(len(scores.picks.selected), 'submission')}")


def _scores_notes(project, scores: Scores) -> None:
    """What the table cannot say: the final picks' warning, versions without a row or not candidates, and the
    submissions not settled yet or never sent."""
    if scores.picks.warning:
        warn(scores.picks.warning)
    if scores.picks.note:
        note(scores.picks.note)
    note("versions that were never submitted are listed by lorakit versions")
    for version in scores.unrecorded:
        warn(f"v{version} has submissions but no ledger row; its scores were not recorded")
    for version, kernel, words in scores.not_candidates:
        note(f"{version_label(project, version, kernel)} is not a candidate: it predicted on {words}")
    for version, words in scores.unsettled:
        note(f"v{version}'s submission {words}: left as it is")
    for version in scores.not_submitted:
        warn(f"v{version}'s unconfirmed submission never reached Kaggle; submit it again: lorakit submit {version}")


def board_served(zip_path: Path) -> str:
    """Which leaderboard Kaggle served in a downloaded zip, as its file's name says: "private", "public", or ""
    when it does not say (DownloadLeaderboard cannot ask for one: Kaggle serves the private board once one
    exists)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = " ".join(archive.namelist()[:10]).lower()
    except (OSError, zipfile.BadZipFile):
        return ""
    return next((board for board in ("private", "public") if f"{board}leaderboard" in names), "")


def version_label(project, version: Optional[int], kernel: str) -> str:
    """v<N> for the project's kernel, owner/slug v<N> for another one; "?" when no version is known."""

    if version is None:
        return "?"
    return f"v{version}" if not kernel or kernel_same(kernel, str(project.kernel)) else f"{kernel} v{version}"


@command(
    "leaderboard",
    "the public leaderboard with my rank highlighted (--download: the file Kaggle serves, the private board once "
    "there is one)",
    flag("--top", type=int, default=20, metavar="N", help="rows to show (default 20)"),
    flag("--download", metavar="DIR", help="also download the full leaderboard zip into DIR"),
    JSON,
)
def cmd_leaderboard(args) -> int:
    out = args.out
    project = project_of(args)
    shown, me, zip_path = leaderboard_get(project, remote_new(), args.top, args.download)
    served = board_served(zip_path) if zip_path is not None else ""
    out.document({"competition": project.competition, "rows": [r.as_json() for r in shown],
                  "me": None if me is None else me.as_json(), "download": None if zip_path is None else str(zip_path),
                  "download_board": served or None})
    rows = [[">" if r.mine else "", r.rank, r.team_name, fmt(r.score, 5), r.date] for r in shown]
    if me is not None and me not in shown:
        rows.append(["", "...", "", "", ""])
        rows.append([">", me.rank, me.team_name, fmt(me.score, 5), me.date])
    if rows:
        out.result(table(["", "rank", "team", "score", "date"], rows))
    else:
        out.result(f"the leaderboard of {project.competition} is empty")
    if me is not None:
        out.result(f"your rank: {me.rank} ({me.team_name}, {fmt(me.score, 5)})")
    else:
        out.result("you are not on the leaderboard yet (or beyond the pages read)")
    if zip_path is not None:
        board = f"the {served} leaderboard" if served else "a leaderboard its file does not name"
        out.progress(f"downloaded the leaderboard Kaggle serves to {zip_path}: {board} (Kaggle serves the private one "
                     "once it exists; the table above is the public one)")
    return 0
