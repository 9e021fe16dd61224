"""submissions/ledger.csv: one row per (kernel, version), readable by pandas.

A row is keyed by its kernel (``kernel_ref``; a row without one belongs to the metadata's kernel, and gets it
written in on the next update: old ledgers migrate in place) and its version. A push is recorded before it is
sent, as a provisional row without a version (status SENDING), found again by its ``push_token`` and numbered
when Kaggle's reply, or a search for the token among the kernel's versions, says which version it became.

Every update reads, changes and rewrites the file under a cross-platform lock (``filelock``), writing a
temporary file in the same folder and renaming it over the ledger (``os.replace``), so an interrupted or
concurrent command never leaves a half-written file or loses a row. A ledger that does not parse is never
rewritten: lorakit stops with an error naming the file and the line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from lorakit.errors import LedgerError, NotFound
from lorakit.processes import temp_tag
from lorakit.project import KernelRef

# Column order of the file; docs/cli.md lists them with these comments (docs/generate.py).
COLUMNS = [
    "version",  # Kaggle kernel version number (submissions/v<N>/; another kernel's: submissions/<slug>/v<N>/); empty while SENDING
    "pushed_at",  # UTC time of the push, ISO 8601
    "message",  # push -m MSG
    "overrides",  # JSON object of the overrides written into the kernel's block
    "config_hash",  # the kernel's config_hash of the effective config, as pushed
    "run_config_hash",  # the config_hash metrics.json says the run used (filled by pull)
    "trainable_params",  # exact trainable parameter count, as pushed
    "git_commit",  # commit of the repository at push time
    "git_dirty",  # true when tracked files had uncommitted changes
    "kernel_ref",  # owner/slug pushed to: with version, the row's key
    "kernel_url",  # URL of the kernel on Kaggle
    "push_token",  # the token comment in the pushed script: finds this push among the kernel's versions
    "sent_after",  # the kernel's newest version before the push was sent: its token is looked for above it
    "predict_from",  # version whose adapter a predict-only run reused
    "adapter_dataset",  # the private dataset (owner/slug) that carried that adapter to Kaggle
    "adapter_sha256",  # adapter_digest of that adapter, pinned in the run's overrides
    "accelerator",  # what the push asked for: a machine shape (NvidiaTeslaT4), "gpu" (any) or "none"
    "status",  # last kernel status seen (QUEUED, RUNNING, COMPLETE, ERROR, ...; SENDING, UNCONFIRMED, NOT_PUSHED)
    "val_accuracy",  # validation accuracy from metrics.json
    "run_minutes",  # the run's minutes from metrics.json (total_seconds, else train + predict seconds)
    "pulled_at",  # UTC time of the last pull
    "submission_ref",  # Kaggle submission ref of the last submission of this version
    "submission_token",  # the token in that submission's description
    "submitted_at",  # UTC time of that submission
    "submission_status",  # PENDING, COMPLETE or ERROR; UNCONFIRMED, NOT_SUBMITTED
    "public_score",  # the submission's public leaderboard score
    "private_score",  # its private score, once Kaggle shows it
    "pending_token",  # the token of a submission sent but not yet confirmed (the columns above keep the last one)
    "pending_status",  # SENDING or UNCONFIRMED while it is unsettled; NOT_SUBMITTED when it never reached Kaggle
    "sweep_id",  # the `lorakit sweep` this version is an arm of (submissions/sweeps/<id>.json); empty otherwise
    # issue 22: the send in flight on this row (a push SENDING, or its submission pending) names its sender
    "sender",  # the lorakit process sending it: "host pid start-time"; no other command settles the row while it lives
    "sent_at",  # UTC time the send was recorded, just before it left
    "send_ends",  # UTC time by which that send is over whatever happens; not on Kaggle LORAKIT_CONFIRM_S after it, it never arrived
    # issue 21: what Kaggle said of a version beyond its status
    "push_problem",  # what Kaggle's reply to the push said is wrong with the version it made (invalid sources or tags, another kernel than meant); status and versions show it
    "session_timeout_s",  # the session_timeout_seconds the push sent: Kaggle stops the run there
    "docker_image",  # the Docker image of the run (GetKernel), recorded when it was the newest version and had just ended
    "machine_shape",  # the machine shape Kaggle ran it on (GetKernel), recorded with docker_image
    # issue 23: what a week of decisions needs at hand, in a second clone too
    "note",  # `lorakit note N TEXT`: your note on the version (the ledger is the committed record: sync keeps it)
    "tags",  # `lorakit tag N final bugged ...`: the version's tags, comma-separated (sync keeps them)
    "failure_message",  # why the run ended ERROR, as Kaggle said it (status, pull, sync)
    "val_rows",  # the validation slice's rows from metrics.json: the width of val_accuracy's interval (pull, sync)
    "train_minutes",  # the training's minutes from metrics.json (train_seconds; pull, sync)
    "device",  # what the run trained on, from metrics.json (pull, sync)
]
SENDING = "SENDING"  # recorded, and about to be sent or in flight: not yet known to have reached Kaggle
LOCK_WAIT_S = 10.0  # a ledger update holds the lock for milliseconds: longer means another command is stuck


def mode_under_umask(mode: int) -> int:
    """``mode`` as the process umask lets new files and folders have it."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def file_write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all: a temporary file in its folder (an ordinary file's mode, not
    mkstemp's 0600), synced, then renamed over it; the ledger, a sweep's record and the report are written so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, mode_under_umask(0o666))
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=LOCK_WAIT_S)


def kernel_same(a: str, b: str) -> bool:
    """Whether two kernel_ref texts name the same kernel (KernelRef.same_as; otherwise equal text)."""
    ra, rb = KernelRef.parse_or_none(a), KernelRef.parse_or_none(b)
    return ra.same_as(rb) if ra is not None and rb is not None else a == b


class Ledger:
    """The rows of one kernel (``kernel``, owner/slug) in the ledger file; rows without a kernel_ref belong
    to ``home``, the metadata's kernel. Ledger(path) alone acts on the rows without a kernel."""

    def __init__(self, path: os.PathLike, kernel: str = "", home: str = ""):
        self.path = Path(path)
        self.kernel = str(kernel)
        self.home = str(home or kernel)

    def kernel_of(self, record: dict) -> str:
        return record.get("kernel_ref") or self.home

    def owns(self, record: dict) -> bool:
        return kernel_same(self.kernel_of(record), self.kernel)

    # -- reading -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def _parse(self, text: str) -> tuple[list[str], list[dict]]:
        where = str(self.path)
        advice = "fix it by hand or move it aside; lorakit will not overwrite it"
        if not text.strip():
            raise LedgerError(f"ledger {where} is empty (corrupted); {advice}")
        if "\x00" in text:
            raise LedgerError(f"ledger {where} contains NUL bytes (corrupted); {advice}")
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            raise LedgerError(f"ledger {where} is corrupted ({exc}); {advice}")
        header = rows[0]
        if "version" not in header or len(set(header)) != len(header) or any(not h.strip() for h in header):
            raise LedgerError(f"ledger {where} has a corrupted header (line 1); {advice}")
        records: list[dict] = []
        seen: set = set()
        for number, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise LedgerError(
                    f"ledger {where} is corrupted: line {number} has {len(row)} fields, expected {len(header)}; {advice}"
                )
            record = dict(zip(header, row))
            if not record["version"] and record.get("push_token"):
                records.append(record)  # a provisional push: keyed by its token
                continue
            try:
                version = int(record["version"])
                if version < 1:
                    raise ValueError
            except ValueError:
                raise LedgerError(
                    f"ledger {where} is corrupted: line {number} has version {record['version']!r}; {advice}"
                )
            key = (self.kernel_of(record), version)
            if key in seen:
                raise LedgerError(f"ledger {where} is corrupted: version {version} of {key[0] or 'the kernel'} "
                                  f"appears twice (line {number}); {advice}")
            seen.add(key)
            records.append(record)
        extra = [h for h in header if h not in COLUMNS]
        return COLUMNS + extra, records

    def _read(self) -> tuple[list[str], list[dict]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return list(COLUMNS), []
        except OSError as exc:
            raise LedgerError(f"cannot read ledger {self.path}: {exc.strerror}")
        try:
            text = raw.decode("utf-8-sig")  # a spreadsheet saves it with a BOM; lorakit writes none
        except UnicodeDecodeError:
            raise LedgerError(f"ledger {self.path} is not UTF-8 text (corrupted); fix it by hand or move it aside")
        return self._parse(text)

    def all_rows(self) -> list[dict]:
        """Every kernel's rows, each with its kernel_ref filled in. A missing ledger is empty; a corrupted
        one raises LedgerError."""
        _, records = self._read()
        return sorted(({**r, "kernel_ref": self.kernel_of(r)} for r in records), key=_order)

    def rows(self) -> list[dict]:
        """This kernel's numbered rows, sorted by version."""
        return [r for r in self.all_rows() if r["version"] and self.owns(r)]

    def provisional(self) -> list[dict]:
        """This kernel's pushes recorded before sending and not numbered yet (SENDING, or never pushed)."""
        return [r for r in self.all_rows() if not r["version"] and self.owns(r)]

    def row(self, version: int) -> Optional[dict]:
        return next((r for r in self.rows() if int(r["version"]) == int(version)), None)

    def latest_version(self) -> int:
        records = self.rows()
        if not records:
            if not self.exists():
                raise NotFound(
                    f"no ledger at {self.path}: push a version first (lorakit push) or name the VERSION"
                )
            raise NotFound(f"the ledger {self.path} has no versions: push one first or name the VERSION")
        return int(records[-1]["version"])

    def check_writable(self) -> None:
        """Fail early (before any network call) when the ledger could not be updated afterwards."""
        self._read()
        folder = self.path.parent
        if folder.exists() and not os.access(folder, os.W_OK):
            raise LedgerError(f"cannot write to {folder}")

    # -- writing -------------------------------------------------------------------------------------
    def _write(self, columns: list[str], records: list[dict]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in sorted(records, key=_order):
            writer.writerow({c: _cell(record.get(c)) for c in columns})
        file_write_atomic(self.path, buffer.getvalue())

    @contextmanager
    def transaction(self) -> Iterator[list[dict]]:
        """Lock, read, let the caller change the rows in place, then write atomically."""
        from filelock import Timeout as LockTimeout

        try:
            with _lock(self.path):
                columns, records = self._read()
                for record in records:  # an old ledger's rows belong to the metadata's kernel: say so
                    record["kernel_ref"] = self.kernel_of(record)
                yield records
                self._write(columns, records)
        except LockTimeout:
            raise LedgerError(f"the ledger {self.path} is locked by another lorakit command; try again")

    def update(self, version: int, **fields) -> dict:
        """Create or update this kernel's row of ``version`` with ``fields`` (None leaves a field unchanged)."""
        with self.transaction() as records:
            for record in records:
                if record["version"] and int(record["version"]) == int(version) and self.owns(record):
                    break
            else:
                record = {"version": str(int(version)), "kernel_ref": self.kernel}
                records.append(record)
            _fill(record, fields)
            return dict(record)

    def add_provisional(self, token: str, check: Optional[Callable[[list], None]] = None, **fields) -> None:
        """Record a push before it is sent: a row without a version, found again by ``token``. ``check`` sees
        this kernel's rows under the lock first, and may refuse (raise): nothing is recorded then."""
        with self.transaction() as records:
            if check is not None:
                check([r for r in records if self.owns(r)])
            records.append(_fill({"version": "", "kernel_ref": self.kernel, "push_token": token}, fields))

    def settle(self, token: str, version: Optional[int], only_if: str = "", **fields) -> bool:
        """Number the push recorded with ``token`` as ``version`` (None: leave it unnumbered) and update it;
        True when an older row of that version (a push that never arrived) was replaced. With ``only_if`` (a
        status), nothing changes unless the row is still there with that status."""
        with self.transaction() as records:
            record = next((r for r in records if r.get("push_token") == token), None)
            if only_if and (record is None or record.get("status") != only_if):
                return False  # settled (or dropped) meanwhile by the command that sent it
            if record is None:  # removed by hand meanwhile
                record = {"kernel_ref": self.kernel, "push_token": token}
                records.append(record)
            older = [] if version is None else [
                r for r in records if r is not record and self.owns(r) and r["version"] == str(int(version))]
            records[:] = [r for r in records if not any(r is o for o in older)]
            if version is not None:
                record["version"] = str(int(version))
            _fill(record, fields)
            return bool(older)

    def drop_provisional(self, token: str) -> None:
        """Forget a push recorded before sending that Kaggle refused: nothing was pushed."""
        with self.transaction() as records:
            records[:] = [r for r in records if r["version"] or r.get("push_token") != token]


def _order(record: dict) -> tuple:
    version = record.get("version")
    return (record.get("kernel_ref", ""), int(version) if version else float("inf"), record.get("pushed_at", ""))


def _fill(record: dict, fields: dict) -> dict:
    unknown = [k for k in fields if k not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown ledger columns: {unknown}")
    for key, value in fields.items():
        if value is not None:
            record[key] = _cell(value)
    return record


def cells(fields: dict) -> dict:
    """``fields`` as the ledger file holds them (text; None is empty), to compare with its rows."""
    return {key: _cell(value) for key, value in fields.items()}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
