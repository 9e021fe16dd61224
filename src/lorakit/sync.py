"""`lorakit sync`: rebuild or complete the ledger from Kaggle, for one kernel (a fresh clone, a teammate's machine).

Kaggle lists no kernel versions, but GetKernel names the newest version number and serves each version's source
by its label, as GetKernelSessionStatus and ListKernelSessionOutput serve its status and output files. So sync
reads, for v1 to the newest: the source (its push token, overrides block and push record: message, git commit,
dirty flag, push time, accelerator asked, config_hash and count as pushed; parsed as JSON, never run), the
status, and metrics.json alone of the outputs (read in memory: the pulled folders are `lorakit pull`'s, and are
never touched); then every submission of the competition, matched to its version by its recorded ref, the
token in its description, else the version its description names.

Everything is read before anything is written; the ledger is then changed in one locked, atomic write (none
when nothing changes). A row is never overwritten: an existing row that disagrees on the push token or a
config_hash is a conflict, reported and left as is; a matching row only gets its empty columns filled and
Kaggle's own columns (the run's status and failure message, the submission's status and scores) refreshed. A
row's note and tags are yours, never Kaggle's: sync keeps them. The sweep records (submissions/sweeps/<id>.json)
this clone lacks are written from the push records of their arms, which carry them, so that `lorakit sweep
--resume` works in any clone.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from lorakit.arms import SWEEP_ID, sweep_restore
from lorakit.common import (
    CONFIG_HASH, MESSAGE_CONTROL, METRICS_MAX_BYTES, TERMINAL_KERNEL, UNCONFIRMED, description_version, kernel_ref_resolve, ledger_of,
    metrics_columns, metrics_parse, overrides_text, submission_columns, submission_key, submission_preferred,
)
from lorakit.console import JSON, Output, command, err, flag, note, plural, project_of, remote_new, table, warn
from lorakit.errors import LorakitError, NotFound, Refused, RemoteError, UsageError
from lorakit.kernel import pushed_source_read
from lorakit.ledger import SENDING, Ledger, cells
from lorakit.processes import temp_tag
from lorakit.project import KernelRef, Project, adapter_dataset_ref, adapter_version_of
from lorakit.push import SWEEP_RECORD
from lorakit.remote import Remote
from lorakit.remote_competitions import Submission

RECORD_COLUMNS = ("push_token", "pushed_at", "message", "git_commit", "git_dirty", "accelerator", "config_hash",
                  "trainable_params", "sweep_id", "session_timeout_s")  # what a push record holds (push.push_record_of)
PUSH_ONLY = ("message", "git_commit", "git_dirty", "pushed_at", "accelerator")  # unknown without a push record
# Kaggle's word now: refreshed
KAGGLE_OWNED = ("status", "failure_message", "submission_status", "public_score", "private_score")
IDENTITY = ("push_token", "config_hash", "run_config_hash")  # a row that disagrees on one is another push
_TOKEN = re.compile(r"lk-[0-9a-f]{12}")
_HASH_PREFIX = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class VersionSeen:
    """What Kaggle says of one version: the ledger columns it confirms, those it cannot tell, and why."""

    version: int
    fields: dict  # ledger column -> cell text
    unknown: tuple = ()  # push-only columns its source holds no record of (pushed before lorakit wrote one)
    problems: tuple = ()  # what could not be read (a damaged block, a metrics.json that is no JSON object)
    sweep: str = ""  # the definition of the sweep it is an arm of, as its push record carries it (JSON)


@dataclass(frozen=True)
class Change:
    """What sync did (with --dry-run: would do) to one version's row, or with one submission."""

    version: Optional[int]
    action: str  # added, completed, unchanged, conflict, absent (not on Kaggle / not in the ledger), unreadable, other
    columns: tuple = ()  # the columns filled in or refreshed; for a conflict, those that disagree
    detail: str = ""
    ref: Optional[int] = None  # the submission's, for a submission
    unknown: tuple = ()  # VersionSeen's, for a version
    problems: tuple = ()

    def as_json(self) -> dict:
        data = {"version": self.version, "action": self.action, "columns": list(self.columns),
                "detail": self.detail or None}
        if self.ref is not None:
            return {"ref": self.ref, **data}
        return {**data, "unknown": list(self.unknown), "problems": list(self.problems)}


@dataclass(frozen=True)
class SyncReport:
    kernel: str
    latest: int  # the kernel's newest version on Kaggle
    versions: tuple  # a Change per version
    submissions: tuple  # a Change per submission to the competition
    dry_run: bool = False
    written: bool = False
    sweeps: tuple = ()  # the sweep records restored (with --dry-run: that would be), as paths

    @property
    def changed(self) -> bool:
        return any(c.action in ("added", "completed") for c in (*self.versions, *self.submissions))

    def as_json(self) -> dict:
        return {"kernel": self.kernel, "latest_version": self.latest, "dry_run": self.dry_run,
                "written": self.written, "versions": [c.as_json() for c in self.versions],
                "submissions": [c.as_json() for c in self.submissions], "sweeps": list(self.sweeps)}


# ------------------------------------------------------------------------------------------ reading Kaggle
def version_seen(project: Project, remote: Remote, ref: KernelRef, number: int) -> Optional[VersionSeen]:
    """Version ``number`` of ``ref`` as Kaggle holds it (None: Kaggle has no such version)."""
    source = remote.kernel_source_get(ref, number)
    if source is None:
        return None
    pushed = pushed_source_read(project, source)
    fields = {"version": str(number), "kernel_ref": str(ref), "kernel_url": ref.url}
    record, problems = record_checked(pushed.record)
    fields.update(cells({k: record.get(k) for k in RECORD_COLUMNS if record.get(k) is not None}))
    if pushed.token and not fields.get("push_token"):
        fields["push_token"] = pushed.token
    if pushed.overrides is not None:
        fields.update(_overrides_fields(pushed.overrides, ref))
    status = remote.kernel_status_get(ref, number)
    if status.named:
        fields["status"] = status.status
        fields.update(cells({"failure_message": status.failure_message or None}))
    problems += pushed.problems
    raw = metrics_fetch(remote, ref, number) if status.status in TERMINAL_KERNEL - {"NEW_SCRIPT"} else None
    try:
        metrics = None if raw is None else metrics_parse(raw, "its metrics.json", problems)
    except UsageError as exc:
        problems.append(f"{exc}: its columns stay empty")
    else:  # the push record's config_hash and count (as pushed) come first
        fields.update({k: v for k, v in metrics_columns(metrics or {}).items() if k not in fields})
    unknown = tuple(k for k in PUSH_ONLY if record.get(k) is None)
    return VersionSeen(number, fields, unknown, tuple(problems), str(pushed.record.get(SWEEP_RECORD) or ""))


# What a push record's fields may hold before sync stores them (Kaggle's copy of the script is untrusted text).
RECORD_RULES = {
    "push_token": re.compile(r"lk-[0-9a-f]{12}"), "config_hash": CONFIG_HASH,
    "git_commit": re.compile(r"[0-9a-f]{7,64}"), "accelerator": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "sweep_id": SWEEP_ID, "pushed_at": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"),
}
MESSAGE_MAX = 10_000


def record_checked(record: dict) -> tuple[dict, list]:
    """The fields of a push record sync may store (the others left out), and a problem per field left out."""
    kept, problems = {}, []
    for key in RECORD_COLUMNS:
        value = record.get(key)
        if value is None or value == "":
            continue
        if _record_field_fits(key, value):
            kept[key] = value
        else:
            problems.append(f"its push record's {key} is not what lorakit writes there: left empty")
    return kept, problems


def _record_field_fits(key: str, value) -> bool:
    if key == "git_dirty":
        return isinstance(value, bool)
    if key == "trainable_params":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**10
    if key == "session_timeout_s":  # Kaggle's session maximum is 12 h
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 48 * 3600
    if not isinstance(value, str):
        return False
    if key == "message":
        return len(value) <= MESSAGE_MAX and not MESSAGE_CONTROL.search(value)  # as push's -m
    return bool(RECORD_RULES[key].fullmatch(value))


def _overrides_fields(overrides: dict, ref: KernelRef) -> dict:
    """The columns a version's overrides block gives: itself, and a predict-only run's adapter (as push wrote them)."""
    fields = {"overrides": overrides_text(overrides)}
    adapter = adapter_version_of(str(overrides.get("adapter_from") or ""))
    if adapter is not None:
        fields.update(predict_from=str(adapter), adapter_dataset=str(adapter_dataset_ref(ref, adapter)),
                      adapter_sha256=str(overrides.get("adapter_sha256") or ""))
    return fields


def metrics_fetch(remote: Remote, ref: KernelRef, number: int) -> Optional[bytes]:
    """The bytes of v<N>'s metrics.json (None when the run left none; only its first bytes past the size a
    metrics.json can have), downloaded into a temporary folder: the version's pulled folder is never touched."""
    files, _log = remote.kernel_output_list(ref, number)
    item = next((f for f in files if f.name == "metrics.json"), None)
    if item is None:
        return None
    with tempfile.TemporaryDirectory(prefix=f"lorakit-sync-{temp_tag()}") as tmp:
        path = Path(tmp) / "metrics.json"
        remote.file_download(item.url, path, f"metrics.json of v{number}")
        with open(path, "rb") as handle:
            return handle.read(METRICS_MAX_BYTES + 1)  # metrics_parse refuses more


# -------------------------------------------------------------------------------------------------- merging
def versions_merge(records: list, seen: list, ledger: Ledger, latest: int, unread: dict) -> list:
    """Merge what Kaggle says of each version into ``records`` (the ledger's rows, changed in place); a Change
    per version: those it could not read (``unread``: number -> why) left as they are, the ledger's versions
    that Kaggle does not have included."""
    changes = [replace(_version_merge(records, one, ledger), unknown=one.unknown, problems=one.problems)
               for one in seen]
    changes += [Change(number, "unreadable", detail=f"could not read v{number} ({why}): left as is")
                for number, why in unread.items()]
    found = {one.version for one in seen} | set(unread)
    for record in records:
        if record["version"] and ledger.owns(record) and int(record["version"]) not in found:
            where = f"Kaggle's newest is v{latest}" if int(record["version"]) > latest else "Kaggle has no such version"
            changes.append(Change(int(record["version"]), "absent", detail=f"not on Kaggle ({where}): left as is"))
    return sorted(changes, key=lambda c: c.version)


def _version_merge(records: list, seen: VersionSeen, ledger: Ledger) -> Change:
    mine = [r for r in records if ledger.owns(r)]
    row = next((r for r in mine if r["version"] == str(seen.version)), None)
    token = seen.fields.get("push_token")
    if row is None:
        row = next((r for r in mine if token and r.get("push_token") == token), None)
        if row is None:
            records.append(dict(seen.fields))
            return Change(seen.version, "added")
        if row["version"]:
            return Change(seen.version, "conflict", ("version",),
                          f"its push token {token} is the ledger's v{row['version']}: left as is")
        # else: a push recorded before sending and never numbered (SENDING); Kaggle's version says which it became
    disagree = [c for c in IDENTITY if row.get(c) and seen.fields.get(c) and row[c] != seen.fields[c]]
    if disagree:
        detail = "; ".join(f"{c} {row[c][:12]} in the ledger, {seen.fields[c][:12]} on Kaggle" for c in disagree)
        return Change(seen.version, "conflict", tuple(disagree), f"{detail}: left as is")
    return _row_complete(row, seen.fields, seen.version)


def _row_complete(row: dict, fields: dict, version: int) -> Change:
    """Fill ``row``'s empty columns from ``fields`` and refresh Kaggle's own; completed, or unchanged."""
    filled = [c for c, v in fields.items()
              if c != "kernel_ref" and v != "" and row.get(c) != v and (not row.get(c) or c in KAGGLE_OWNED)]
    for column in filled:
        row[column] = fields[column]
    return Change(version, "completed" if filled else "unchanged", tuple(filled))


def submissions_merge(records: list, submissions: list, ledger: Ledger, home: str) -> list:
    """Record in ``records`` each version's submission among ``submissions``, matched as `lorakit scores`
    matches them (the recorded ref, a token in the description, else the version it names) and chosen as it
    chooses (the recorded one, else the newest); a Change per submission."""
    rows = {(r["kernel_ref"], int(r["version"])): r for r in records if r["version"]}
    keys = {sub.ref: submission_key(sub, rows, home) for sub in submissions}
    open_rows = {k: r for k, r in rows.items()
                 if ledger.owns(r) and r.get("pending_status") not in (SENDING, UNCONFIRMED)}
    chosen: dict = {}
    for sub in submissions:
        key = keys[sub.ref]
        if key in open_rows and submission_preferred(open_rows[key], sub, chosen.get(key)):
            chosen[key] = sub
    recorded = {sub.ref: _submission_record(rows[key], sub, key[1]) for key, sub in chosen.items()}
    return [replace(recorded.get(sub.ref) or _submission_left(keys[sub.ref], rows, ledger), ref=sub.ref)
            for sub in submissions]


def _submission_left(key: Optional[tuple], rows: dict, ledger: Ledger) -> Change:
    """Why a submission is recorded in no row."""
    if key is None or not ledger.owns({"kernel_ref": key[0]}):
        return Change(key and key[1], "other", detail="names no version of this kernel")
    version = key[1]
    if key not in rows:
        return Change(version, "absent", detail=f"v{version} is neither in the ledger nor on Kaggle")
    if rows[key].get("pending_status") in (SENDING, UNCONFIRMED):
        return Change(version, "unchanged", detail=f"v{version} has a submission pending: lorakit scores settles it")
    return Change(version, "unchanged", detail=f"another submission of v{version}: its row records one")


def _submission_record(row: dict, sub: Submission, version: int) -> Change:
    """Fill ``row``'s submission columns from ``sub``, unless its description names another config_hash."""
    named = description_marks(sub.description)
    pushed = row.get("config_hash", "")[:12]
    if named.get("config_hash") and pushed and named["config_hash"] != pushed:
        return Change(version, "conflict", ("config_hash",),
                      f"it names config_hash {named['config_hash']}, v{version} has {pushed}: left as is")
    fields = {**submission_columns(sub), **cells({"submission_token": named.get("token"), "submitted_at": sub.date})}
    return _row_complete(row, fields, version)


def description_marks(description: str) -> dict:
    """The config_hash prefix and the token that a submission's description carries after ``v<N> owner/slug``
    (common.submission_description), before its message; those it lacks are left out."""
    if description_version(description)[0] is None:
        return {}
    words = (description or "").split(":", 1)[0].split()[1:]
    marks = {"token": next((w for w in words if _TOKEN.fullmatch(w)), None),
             "config_hash": next((w for w in words if _HASH_PREFIX.fullmatch(w)), None)}
    return {k: v for k, v in marks.items() if v}


# ---------------------------------------------------------------------------------------------------- sync
# The version walk (issue 22): bounded, and said on stderr as it goes.
SYNC_MAX_VERSIONS = 1000  # more needs --all: a kernel named with v10,000,000 is a refusal, not hours of requests
FAILURES_IN_A_ROW = 5  # versions that failed after their retries: the rest are not asked for
PROGRESS_EVERY = 25


def walk_check(ref: KernelRef, latest: int, read_all: bool) -> None:
    """Refuse a walk longer than SYNC_MAX_VERSIONS (unless ``read_all``) before a version is read."""
    if latest > SYNC_MAX_VERSIONS and not read_all:
        raise Refused(f"Kaggle names v{latest:,} as the newest version of {ref}: sync reads at most "
                      f"{SYNC_MAX_VERSIONS:,} versions without --all (each takes three or four requests); nothing "
                      "read, nothing written")


def versions_walk(project: Project, remote: Remote, ref: KernelRef, latest: int) -> tuple[list, dict]:
    """v1 to v<latest> as Kaggle holds them, and {number: why} of those that could not be read (a 404, a
    failure after its retries; once FAILURES_IN_A_ROW failed in a row, the rest are not asked for)."""
    seen, unread, failures = [], {}, 0
    for number in range(1, latest + 1):
        if number % PROGRESS_EVERY == 0:
            err(f"lorakit: sync: reading v{number} of v{latest}")
        if failures >= FAILURES_IN_A_ROW:
            unread[number] = f"not asked: Kaggle failed on {FAILURES_IN_A_ROW} versions in a row"
            continue
        try:
            one = version_seen(project, remote, ref, number)
        except RemoteError as exc:
            failures += 1
            unread[number] = str(exc)
            continue
        failures = 0
        if one is None:
            unread[number] = "Kaggle answers 404 for its source"
        else:
            seen.append(one)
    return seen, unread


def ledger_sync(project: Project, remote: Remote, dry_run: bool = False, read_all: bool = False) -> SyncReport:
    """Read every version of the kernel and every submission from Kaggle, then merge them into the ledger in
    one atomic write (none with ``dry_run``, or when nothing changes). A corrupted ledger is refused first; a
    kernel with more than SYNC_MAX_VERSIONS versions without ``read_all``."""
    if dry_run:
        ledger_of(project).all_rows()  # a corrupted ledger: refused before any call
    else:
        ledger_of(project).check_writable()
    ref = kernel_ref_resolve(project, remote)
    ledger = ledger_of(project, ref)
    latest = remote.kernel_version_latest(ref)
    if latest < 1:
        raise NotFound(f"Kaggle has no kernel {ref} (or no version of it): check --kernel or kernel-metadata.json")
    walk_check(ref, latest, read_all)
    seen, unread = versions_walk(project, remote, ref, latest)
    submissions = remote.submissions_list(project.competition)
    home = str(project.home or project.kernel)

    def merged(records: list) -> SyncReport:
        versions = versions_merge(records, seen, ledger, latest, unread)
        subs = submissions_merge(records, submissions, ledger, home)
        return SyncReport(str(ref), latest, tuple(versions), tuple(subs), dry_run)

    report = merged([dict(r) for r in ledger.all_rows()])
    if not dry_run and report.changed:
        with ledger.transaction() as records:  # merged again under the lock: what changed meanwhile counts
            report = replace(merged(records), written=True)
    return replace(report, sweeps=sweeps_restore(project, seen, dry_run))


def sweeps_restore(project: Project, seen: list, dry_run: bool) -> tuple:
    """The sweep records this clone lacks, written from the newest push record of each (arms.sweep_restore):
    `lorakit sweep --resume ID` then works here too. The paths written (with ``dry_run``: that would be)."""
    restored = []
    for one in sorted(seen, key=lambda s: -s.version):
        sweep_id = one.fields.get("sweep_id", "")
        if sweep_id and one.sweep and not any(sweep_id in path for path in restored):
            path = sweep_restore(project, one.sweep, sweep_id, dry_run)
            restored += [path] if path else []
    return tuple(restored)


# ------------------------------------------------------------------------------------- the command line
@command(
    "sync",
    "rebuild or complete the ledger from Kaggle: every version of the kernel (status, metrics.json, what its push "
    "recorded) and every submission matched to its version; a row that disagrees is reported, never overwritten",
    flag("--dry-run", action="store_true", help="read Kaggle and show what would change; write nothing"),
    flag("--all", dest="read_all", action="store_true",
         help=f"read every version even when Kaggle names more than {SYNC_MAX_VERSIONS:,} (refused without it)"),
    JSON,
)
def cmd_sync(args) -> int:
    project = project_of(args)
    report = ledger_sync(project, remote_new(), args.dry_run, args.read_all)
    _sync_show(args.out, project, report)
    unread = [c for c in report.versions if c.action == "unreadable"]
    if unread:  # the rest is merged: the one error line says what is missing (under --json, with the report)
        args.out.partial = report.as_json()
        raise LorakitError(f"{plural(len(unread), 'version')} of {report.kernel} could not be read, the rest is merged; "
                           f"the first: {unread[0].detail}; run lorakit sync again")
    args.out.document(report.as_json())
    return 0


def _sync_show(out: Output, project, report) -> None:
    """The versions' and the submissions' tables, a warning per conflict or unreadable part, and what was written."""
    submissions = plural(len(report.submissions), "submission")
    out.result(f"{report.kernel}: v1 to v{report.latest} on Kaggle, {submissions} to "
               f"{project.competition}")
    out.result(table(["version", "action", "columns / why"],
                      [[f"v{c.version}", c.action, c.detail if c.action in ("conflict", "absent", "unreadable") else
                        ", ".join(c.columns)] for c in report.versions]))
    mine = [c for c in report.submissions if c.action != "other"]
    if mine:
        out.result(table(["submission", "version", "action", "columns / why"],
                          [[c.ref, f"v{c.version}", c.action, ", ".join(c.columns) or c.detail] for c in mine]))
    for c in (*report.versions, *report.submissions):
        if c.action == "conflict":
            what = f"submission {c.ref} of v{c.version}" if c.ref else f"v{c.version}"
            warn(f"{what} conflicts with the ledger: {c.detail}")
        for problem in c.problems:
            warn(f"v{c.version}: {problem}")
        if c.action == "unreadable":
            warn(f"{c.detail}; run lorakit sync again to read it")
    _sync_unknown_note(report)
    counts = ", ".join(f"{sum(c.action == a for c in report.versions)} {a}"
                       for a in ("added", "completed", "unchanged", "conflict"))
    unread = sum(c.action == "unreadable" for c in report.versions)
    counts += f", {unread} could not be read" if unread else ""
    verb = "dry run, nothing written to" if report.dry_run else "wrote" if report.written else "nothing to change in"
    out.result(f"{verb} {project.ledger_path.relative_to(project.root)} ({counts})")
    for path in report.sweeps:
        sweep_id = Path(path).stem
        out.result(f"{'would restore' if report.dry_run else 'restored'} {path} from its arms' push records "
                   f"(lorakit sweep --resume {sweep_id} carries it on here)")


def _sync_unknown_note(report) -> None:
    """Name the versions whose push-only columns stay unknown: no push record at all, or one without some."""

    none = [f"v{c.version}" for c in report.versions if len(c.unknown) == len(PUSH_ONLY)]
    if none:
        note(f"{', '.join(none)} carry no push record (pushed before lorakit wrote one): their message, "
              "git commit, dirty flag, push time and accelerator stay unknown")
    for missing in sorted({c.unknown for c in report.versions if 0 < len(c.unknown) < len(PUSH_ONLY)}):
        which = [f"v{c.version}" for c in report.versions if c.unknown == missing]
        note(f"{', '.join(which)}: the push record holds no {', '.join(missing)} (git's are empty when the "
              "push was not made from a git checkout)")
