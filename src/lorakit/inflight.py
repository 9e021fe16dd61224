"""Sends that may or may not have reached Kaggle: a push left SENDING or UNCONFIRMED is found again by its
token among the kernel's versions, before any command acts on a version or pushes the same config again.
"""

from __future__ import annotations

from typing import Iterable, Optional

from lorakit.common import NOT_PUSHED, UNCONFIRMED, kernel_ref_resolve, ledger_of, version_parse
from lorakit.errors import FlagNeeded, UsageError
from lorakit.ledger import SENDING
from lorakit.project import KernelRef, Project
from lorakit.remote import Remote
from lorakit.stats import finite_number


def pushes_settle(project: Project, remote: Remote, ref: KernelRef) -> list:
    """Settle this kernel's pushes the ledger holds as SENDING (recorded, then the command ended) by their
    token among the versions above the one they were sent after; the rows of those that went through."""
    ledger = ledger_of(project, ref)
    pending = [r for r in ledger.provisional() if r.get("status") == SENDING]
    if not pending:
        return []
    latest = remote.kernel_version_latest(ref)
    sources: dict = {}
    settled = []
    for row in pending:
        found = token_version(remote, ref, row, range(int(finite_number(row.get("sent_after")) or 0) + 1, latest + 1), sources)
        if found is None:
            ledger.settle(row["push_token"], None, status=NOT_PUSHED)
            continue
        status = remote.kernel_status_get(ref, found).status  # a fresh push's QUEUED when the reply names none
        ledger.settle(row["push_token"], found, status=status)
        settled.append({**row, "version": str(found), "status": status})
    return settled


def token_version(remote: Remote, ref: KernelRef, row: dict, numbers: Iterable[int], sources: dict) -> Optional[int]:
    """The version among ``numbers`` whose source holds the row's push token (None: none does); ``sources``
    caches the sources read, for the next row."""
    for number in numbers:
        if number not in sources:
            sources[number] = remote.kernel_source_get(ref, number) or ""
        if row.get("push_token") and row["push_token"] in sources[number]:
            return number
    return None


def push_duplicate_check(rows: list, config_hash: str, settled: list) -> None:
    """A push of a config this kernel already ran to COMPLETE (or whose lost push just turned out to have gone
    through) spends a GPU run again: it asks for --again."""
    same = [r for r in rows if r.get("config_hash") == config_hash and r.get("status") == "COMPLETE"]
    same += [r for r in settled if r.get("config_hash") == config_hash]
    if same:
        r = same[-1]
        raise FlagNeeded(f"v{r['version']} already ran config_hash {config_hash[:12]} ({r['status']}): "
                         f"nothing pushed; see lorakit status {r['version']}, or push it again with --again")


def version_resolve(project: Project, version) -> int:
    if version is None:
        return ledger_of(project).latest_version()
    return version_parse(version)


def version_target(project: Project, remote: Remote, version) -> tuple[int, KernelRef]:
    """The version a command acts on (the one named, else the newest in the ledger) and its kernel (--kernel,
    else the metadata's), once the pushes left SENDING are settled and an UNCONFIRMED one is confirmed."""
    ref = kernel_ref_resolve(project, remote)
    pushes_settle(project, remote, ref)
    version = version_resolve(project, version)
    push_confirm(project, remote, version, ref)
    return version, ref


def push_confirm(project: Project, remote: Remote, version: int, ref: KernelRef) -> None:
    """When the ledger holds v<N> as UNCONFIRMED, find out from its source whether that push became v<N>.

    Raises UsageError (and records NOT_PUSHED) when it did not; returns when it did or was never in doubt.
    """
    ledger = ledger_of(project, ref)
    row = ledger.row(version) or {}
    if row.get("status") != UNCONFIRMED:
        return
    sources: dict = {}
    if token_version(remote, ref, row, [version], sources) == version:
        return
    after = int(finite_number(row.get("sent_after")) or version - 1)  # another push may have taken v<N> meanwhile
    later = range(after + 1, remote.kernel_version_latest(ref) + 1)
    found = token_version(remote, ref, row, [n for n in later if n != version], sources)
    if found is not None:
        ledger.settle(row["push_token"], found, status=remote.kernel_status_get(ref, found).status)
        raise UsageError(f"the push recorded as v{version} went through as v{found} (another push took "
                         f"v{version}); the ledger now says so: lorakit status {found}")
    ledger.update(version, status=NOT_PUSHED)
    seen = f"{ref} v{version} is another push" if sources.get(version) else f"{ref} has no v{version}"
    raise UsageError(f"the push recorded as v{version} never reached Kaggle ({seen}); push it again")
