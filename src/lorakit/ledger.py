"""submissions/ledger.csv: one row per kernel version, readable by pandas.

Every update reads, changes and rewrites the file under a cross-platform lock (``filelock``), writing a
temporary file in the same folder and renaming it over the ledger (``os.replace``), so an interrupted or
concurrent command never leaves a half-written file or loses a row. A ledger that does not parse is never
rewritten: lorakit stops with an error naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from lorakit.errors import LedgerError

# Column order of the file; docs/cli.md lists them with these comments (docs/generate.py).
COLUMNS = [
    "version",  # Kaggle kernel version number, the only id (submissions/v<N>/)
    "pushed_at",  # UTC time of the push, ISO 8601
    "message",  # push -m MSG
    "overrides",  # JSON object of the overrides written into the kernel's block
    "config_hash",  # the kernel's config_hash of the effective config, as pushed
    "run_config_hash",  # the config_hash metrics.json says the run used (filled by pull)
    "trainable_params",  # exact trainable parameter count, as pushed
    "git_commit",  # commit of the repository at push time
    "git_dirty",  # true when tracked files had uncommitted changes
    "kernel_ref",  # owner/slug pushed to
    "kernel_url",  # URL of the kernel on Kaggle
    "push_token",  # the token comment in the pushed script: finds this push among the kernel's versions
    "predict_from",  # version whose adapter a predict-only run reused
    "adapter_dataset",  # the private dataset (owner/slug) that carried that adapter to Kaggle
    "adapter_sha256",  # adapter_digest of that adapter, pinned in the run's overrides
    "accelerator",  # what the push asked for: a machine shape (NvidiaTeslaT4), "gpu" (any) or "none"
    "status",  # last kernel status seen (QUEUED, RUNNING, COMPLETE, ERROR, ...; UNCONFIRMED, NOT_PUSHED)
    "val_accuracy",  # validation accuracy from metrics.json
    "run_minutes",  # the run's minutes from metrics.json (total_seconds, else train + predict seconds)
    "pulled_at",  # UTC time of the last pull
    "submission_ref",  # Kaggle submission ref of the last submission of this version
    "submission_token",  # the token in that submission's description
    "submitted_at",  # UTC time of that submission
    "submission_status",  # PENDING, COMPLETE or ERROR; UNCONFIRMED, NOT_SUBMITTED
    "public_score",  # the submission's public leaderboard score
    "private_score",  # its private score, once Kaggle shows it
]


def mode_under_umask(mode: int) -> int:
    """``mode`` as the process umask lets new files and folders have it."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=60)


class Ledger:
    def __init__(self, path: os.PathLike):
        self.path = Path(path)

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
        seen: set[int] = set()
        for number, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise LedgerError(
                    f"ledger {where} is corrupted: line {number} has {len(row)} fields, expected {len(header)}; {advice}"
                )
            record = dict(zip(header, row))
            try:
                version = int(record["version"])
                if version < 1:
                    raise ValueError
            except ValueError:
                raise LedgerError(
                    f"ledger {where} is corrupted: line {number} has version {record['version']!r}; {advice}"
                )
            if version in seen:
                raise LedgerError(f"ledger {where} is corrupted: version {version} appears twice (line {number}); {advice}")
            seen.add(version)
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
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LedgerError(f"ledger {self.path} is not UTF-8 text (corrupted); fix it by hand or move it aside")
        return self._parse(text)

    def rows(self) -> list[dict]:
        """All rows, sorted by version. A missing ledger is empty; a corrupted one raises LedgerError."""
        _, records = self._read()
        return sorted(records, key=lambda r: int(r["version"]))

    def row(self, version: int) -> Optional[dict]:
        for record in self.rows():
            if int(record["version"]) == int(version):
                return record
        return None

    def latest_version(self) -> int:
        records = self.rows()
        if not records:
            if not self.exists():
                raise LedgerError(
                    f"no ledger at {self.path}: push a version first (lorakit push) or name the VERSION"
                )
            raise LedgerError(f"the ledger {self.path} has no versions: push one first or name the VERSION")
        return int(records[-1]["version"])

    def check_writable(self) -> None:
        """Fail early (before any network call) when the ledger could not be updated afterwards."""
        self._read()
        folder = self.path.parent
        if folder.exists() and not os.access(folder, os.W_OK):
            raise LedgerError(f"cannot write to {folder}")

    # -- writing -------------------------------------------------------------------------------------
    def _write(self, columns: list[str], records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger.", suffix=".tmp", dir=str(self.path.parent))
        try:
            os.chmod(tmp, mode_under_umask(0o666))  # mkstemp makes it 0600; the ledger is an ordinary file
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
                writer.writeheader()
                for record in sorted(records, key=lambda r: int(r["version"])):
                    writer.writerow({c: _cell(record.get(c)) for c in columns})
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @contextmanager
    def transaction(self) -> Iterator[list[dict]]:
        """Lock, read, let the caller change the rows in place, then write atomically."""
        from filelock import Timeout as LockTimeout

        try:
            with _lock(self.path):
                columns, records = self._read()
                yield records
                self._write(columns, records)
        except LockTimeout:
            raise LedgerError(f"the ledger {self.path} is locked by another lorakit command; try again")

    def update(self, version: int, **fields) -> dict:
        """Create or update the row of ``version`` with ``fields`` (None leaves a field unchanged)."""
        unknown = [k for k in fields if k not in COLUMNS]
        if unknown:
            raise ValueError(f"unknown ledger columns: {unknown}")
        with self.transaction() as records:
            for record in records:
                if int(record["version"]) == int(version):
                    break
            else:
                record = {"version": str(int(version))}
                records.append(record)
            for key, value in fields.items():
                if value is not None:
                    record[key] = _cell(value)
            return dict(record)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
