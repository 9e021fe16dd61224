"""What Kaggle would refuse, asked before anything is sent; and what it refused once sent, said with its fix.

- The competition (one GetCompetition per push, run, sweep or submit): rules not accepted refuse, naming the
  rules page; a closed competition (its deadline passed, its submissions disabled) refuses a push meant to be
  submitted (``run --submit``, ``sweep --submit-best``) and a submission Kaggle would refuse, and is a note on a
  plain push. A reply that cannot be read is a note, never a refusal.
- The sources of kernel-metadata.json, one lookup each (a dataset, a kernel, a model instance, a competition):
  one that does not exist or cannot be read is named with what to fix, before SaveKernel.
- The title: a kernel that does not exist yet is created by Kaggle under the slug of its title, so a title and
  an id that disagree would push to a kernel lorakit does not follow.
- KNOWN_REFUSALS: Kaggle's refusals as users quote them, each mapped to its fix (a KaggleRefused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from lorakit.errors import KaggleRefused, NotFound, Refused, RemoteError
from lorakit.project import DatasetRef, KernelRef, slugify_title
from lorakit.remote import Remote

COMPETITION_URL = "https://www.kaggle.com/competitions/{}"


@dataclass(frozen=True)
class CompetitionState:
    """What GetCompetition said of a competition; ``read`` False when the reply could not be read (``why``)."""

    name: str
    read: bool
    exists: bool = True
    entered: bool = False
    deadline: Optional[datetime] = None  # UTC
    submissions_disabled: bool = False
    why: str = ""

    @property
    def rules_url(self) -> str:
        return COMPETITION_URL.format(self.name) + "/rules"

    @property
    def closed(self) -> str:
        """Why the competition takes no more submissions that count; "" while it does (or when unread)."""
        if not self.read or not self.exists:
            return ""
        if self.submissions_disabled:
            return "its submissions are disabled"
        if self.deadline is not None and self.deadline <= datetime.now(timezone.utc):
            return f"its deadline passed ({self.deadline:%Y-%m-%d %H:%M} UTC)"
        return ""

    def as_json(self) -> dict:
        return {"competition": self.name, "read": self.read, "exists": self.exists, "entered": self.entered,
                "deadline": None if self.deadline is None else self.deadline.isoformat(),
                "submissions_disabled": self.submissions_disabled, "closed": self.closed or None}


def utc_of(value) -> Optional[datetime]:
    """A reply's datetime as an aware UTC one (the SDK gives UTC without a zone); None for anything else."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.utcoffset() is None else value.astimezone(timezone.utc)


def competition_read(remote: Remote, competition: str) -> CompetitionState:
    """One GetCompetition; a state with ``read`` False when the call failed or the reply names no competition
    (Kaggle leaves out fields that hold their default, so only a named competition says what it leaves out)."""
    try:
        reply = remote.competition_get(competition)
    except RemoteError as exc:
        if exc.status == 401:  # the credentials, which every later call needs too
            raise
        return CompetitionState(competition, False, why=str(exc))
    if reply is None:
        return CompetitionState(competition, True, exists=False)
    if not (getattr(reply, "id", 0) or getattr(reply, "ref", "")):
        return CompetitionState(competition, False, why="Kaggle's reply names no competition")
    return CompetitionState(competition, True, True, bool(reply.user_has_entered), utc_of(reply.deadline),
                            bool(reply.submissions_disabled))


def competition_preflight(remote: Remote, competition: str, submit_flag: str, notes: list) -> CompetitionState:
    """Before a push: refuse when the competition does not exist or its rules are not accepted, and when it is
    closed to a push meant to be submitted (``submit_flag``, e.g. "--submit"; "" for a plain push, which gets
    a note instead)."""
    state = competition_read(remote, competition)
    _entered_check(state, notes, "pushed")
    if state.closed and submit_flag:
        raise Refused(f"{competition} takes no submissions that count ({state.closed}): a run for {submit_flag} "
                      f"would be wasted; push without {submit_flag}; nothing pushed")
    if state.closed:
        notes.append(f"{competition} takes no submissions that count ({state.closed}): this run can be scored "
                     "by no leaderboard")
    return state


def submission_preflight(remote: Remote, competition: str, notes: list) -> CompetitionState:
    """Before a submission: refuse when the rules are not accepted or Kaggle disabled submissions; a late
    submission (the deadline passed) is scored but not ranked, so it is a note."""
    state = competition_read(remote, competition)
    _entered_check(state, notes, "submitted")
    if state.read and state.submissions_disabled:
        raise Refused(f"{competition} has its submissions disabled: Kaggle would refuse it; nothing submitted")
    if state.closed:
        notes.append(f"{competition}: {state.closed}: a late submission is scored but not ranked")
    return state


def _entered_check(state: CompetitionState, notes: list, done: str) -> None:
    if not state.read:
        notes.append(f"could not read the competition {state.name} ({state.why}): its rules and deadline are "
                     "not checked")
    elif not state.exists:
        raise NotFound(f"Kaggle has no competition {state.name!r}: check competition_sources in "
                       f"kernel-metadata.json or --competition; nothing {done}")
    elif not state.entered:
        raise Refused(f"you have not accepted the rules of {state.name}: accept them at {state.rules_url} (Kaggle "
                      f"attaches its data and takes submissions only then); nothing {done}")


# ------------------------------------------------------------------------------------------------ sources
def sources_preflight(remote: Remote, metadata: dict, competition: CompetitionState, notes: list) -> None:
    """Look up every dataset, kernel, model and competition source of ``metadata`` (one call each); Refused
    naming each that does not exist or cannot be read, with its fix. A lookup that fails is a note."""
    looks = {"dataset_sources": _dataset_problem, "kernel_sources": _kernel_problem,
             "model_sources": _model_problem, "competition_sources": _competition_problem}
    problems = []
    for key, look in looks.items():
        for source in metadata.get(key) or []:
            try:
                problem = look(remote, str(source), competition)
            except RemoteError as exc:
                if exc.status == 401:
                    raise
                if exc.status != 403:
                    notes.append(f"could not look up {key} {source!r} ({exc}): not checked")
                    continue
                problem = "you may not read it (403): make it public, or attach a copy of your own"
            if problem:
                problems.append(f"{key} {source!r}: {problem}")
    if problems:
        raise Refused("Kaggle would not attach " + "; ".join(problems) + " (fix kernel-metadata.json); nothing pushed")


def _newer_than(version: Optional[str], newest: int) -> str:
    """The problem of a source pinned to a version its owner has not made ("" when there is none)."""
    if version is None or not version.isdigit() or int(version) <= newest:
        return ""
    return f"it has no version {version} (its newest is {newest})"


def _dataset_problem(remote: Remote, source: str, _competition: CompetitionState) -> str:
    owner, slug, *version = source.split("/")
    newest = remote.dataset_versions_get(DatasetRef(owner, slug))
    if newest is None:
        return "no such dataset, or not one you can see: check its owner/slug on kaggle.com, or remove it"
    return _newer_than(version[0] if version else None, newest)


def _kernel_problem(remote: Remote, source: str, _competition: CompetitionState) -> str:
    owner, slug, *version = source.split("/")
    number = int(version[0]) if version and version[0].isdigit() else None
    if remote.kernel_found(KernelRef(owner, slug), number):
        return ""
    return "no such kernel (or version), or not one you can see: check its owner/slug, or remove it"


def _model_problem(remote: Remote, source: str, _competition: CompetitionState) -> str:
    parts = source.split("/")
    if len(parts) != 5:
        return "a model source is owner/model/framework/instance/version"
    newest = remote.model_instance_versions_get(*parts[:4])
    if newest is None:
        return "no such model instance, or not one you can see: check it on kaggle.com/models, or remove it"
    return _newer_than(parts[4], newest)


def _competition_problem(remote: Remote, source: str, competition: CompetitionState) -> str:
    state = competition if source == competition.name else competition_read(remote, source)
    if not state.read:
        return ""  # the competition preflight, or the lookup, said why in a note
    if not state.exists:
        return "no such competition: check its slug"
    return "" if state.entered else f"you have not accepted its rules: accept them at {state.rules_url}"


def title_preflight(remote: Remote, title: str, ref: KernelRef) -> None:
    """Refuse the first push of a kernel whose ``title`` makes another slug: Kaggle would create that kernel
    instead (an existing kernel takes the push by its id, so then nothing is asked)."""
    made = slugify_title(title)
    if not title or made == ref.slug.lower() or remote.kernel_version_latest(ref) > 0:
        return
    raise Refused(f"kernel-metadata.json's title {title!r} makes the slug {made!r}, and {ref} does not exist yet: "
                  f"Kaggle would create {ref.owner}/{made} instead; set the title to {title_for(ref.slug)!r} (or the "
                  f"id to {ref.owner}/{made}); nothing pushed")


def title_for(slug: str) -> str:
    """A title whose slug (slugify_title) is ``slug``."""
    return slug.replace("-", " ").replace("_", " ")


# ------------------------------------------------------------------------------------------------ refusals
@dataclass(frozen=True)
class KnownRefusal:
    """A refusal of Kaggle's, by ``words`` (a regular expression, any case; its group ``limit`` the number Kaggle
    quotes) found in what it answered, and its ``fix`` ({limit}; {rules}: the competition's rules page)."""

    kind: str
    words: str
    fix: str


KNOWN_REFUSALS = (
    KnownRefusal("session_count", r"maximum batch gpu session count of (?P<limit>\d+) reached",
                 "other runs hold every GPU session Kaggle allows at once ({limit}): wait until one ends (lorakit "
                 "status), or let lorakit sweep --parallel wait for a session"),
    KnownRefusal("phone", r"phone",
                 "verify your phone number at https://www.kaggle.com/settings: Kaggle lends a GPU and the "
                 "internet only to phone-verified accounts"),
    KnownRefusal("gpu_quota", r"quota",
                 "this week's GPU quota is spent: lorakit quota says when it refreshes (or push with "
                 "--accelerator none)"),
    KnownRefusal("rules", r"rules|competitions\.participate|must accept",
                 "accept the competition's rules at {rules}"),
    KnownRefusal("not_found", r"(?:notebook|kernel) not found|slug",
                 "check the id in kernel-metadata.json (or --kernel): it must be owner/slug of your kernel, and a "
                 "kernel not made yet needs a title whose slug is that slug"),
)


def kaggle_refusal(what: str, text: str, status: Optional[int], competition: str) -> Optional[KaggleRefused]:
    """Kaggle's refusal of ``what`` (its ``text``) with the fix of the KNOWN_REFUSALS it matches; None when
    it matches none."""
    for known in KNOWN_REFUSALS:
        match = re.search(known.words, text or "", re.IGNORECASE)
        if match:
            limit = int(match["limit"]) if match.groupdict().get("limit") else None
            fix = known.fix.format(limit=limit, rules=COMPETITION_URL.format(competition) + "/rules")
            return KaggleRefused(f"Kaggle refused {what}: {text}; {fix}", status, known.kind, limit)
    return None
