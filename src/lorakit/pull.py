"""`lorakit pull`: a version's outputs downloaded into submissions/v<N>/ at once or not at all, checked, and
its ledger row filled from its metrics.json.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from lorakit.common import (
    FAILED_KERNEL, accelerator_asked, ledger_of, log_readable, metrics_columns, rows_expected_of,
    run_minutes_of, utc_now,
)
from lorakit.common import predicted_on_of
from lorakit.console import JSON, Output, command, err, flag, fmt, project_of, remote_new, warn
from lorakit.errors import RemoteError, UsageError
from lorakit.follow import environment_record
from lorakit.inflight import UNSETTLED, version_target
from lorakit.kernel import submission_check
from lorakit.ledger import mode_under_umask
from lorakit.processes import temp_tag
from lorakit.project import KernelRef, Project
from lorakit.remote import KernelStatus, Remote
from lorakit.runs import pulled_run_load


@dataclass(frozen=True)
class PullResult:
    version: int
    folder: Path
    files: tuple
    metrics: Optional[dict]
    warnings: tuple = ()
    status: str = ""
    submittable: bool = False  # the run completed and its submission.csv passed the kernel's rules

    @property
    def has_adapter(self) -> bool:
        return "adapter/kit.json" in self.files

    def as_json(self) -> dict:
        m = self.metrics or {}
        return {
            "version": self.version,
            "status": self.status,
            "folder": str(self.folder),
            "files": list(self.files),
            "val_accuracy": m.get("val_accuracy"),
            "run_minutes": run_minutes_of(m) if m else None,
            "device": m.get("device"),
            "metrics": self.metrics,
            "warnings": list(self.warnings),
        }


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise RemoteError(f"refusing the output file {name!r}: it would land outside the version folder")
    return path


_GPU_MODEL = re.compile(r"^Nvidia(?:Tesla)?([A-Za-z]+\d+)")  # NvidiaTeslaT4 -> T4, NvidiaL4X1 -> L4, NvidiaH100 -> H100


def device_mismatch(asked: str, device: str) -> Optional[str]:
    """Why the device metrics.json names is not what the push asked for (see accelerator_asked); None when
    it is, when no GPU was asked for, or when the names do not say."""
    if not device or not (asked == "gpu" or _GPU_MODEL.match(asked)):
        return None
    if device.lower().startswith("cpu"):
        return f"asked for {asked} but ran on {device} (metrics.json): the run got no GPU"
    match = _GPU_MODEL.match(asked)
    if match is None:
        return None
    model = match.group(1).lower()
    words = re.findall(r"[a-z0-9]+", device.lower())  # "Tesla T4 x2" -> tesla, t4, x2
    spans = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    if model in spans:
        return None
    return f"asked for {asked} but ran on {device} (metrics.json)"


@contextlib.contextmanager
def pull_lock(project: Project, version: int, wait: float, on_wait: Callable[[str], None]):
    """Hold the inter-process lock of v<N>'s pull; wait up to ``wait`` seconds for another pull to finish."""
    from filelock import FileLock
    from filelock import Timeout as LockTimeout

    project.submissions_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(project.submissions_dir / f".pull-v{version}.lock"))
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
        on_wait(f"another lorakit is pulling v{version}; waiting up to {wait:g} s for it to finish")
        try:
            lock.acquire(timeout=wait)
        except LockTimeout:
            raise UsageError(
                f"another lorakit is still pulling v{version} after {wait:g} s; try again once it has finished"
            ) from None
    try:
        yield
    finally:
        lock.release()


def _outputs_download(project: Project, remote: Remote, version: int, files: list, raw_log: str) -> list:
    """Download every output into a folder of this process's own, then swap it in as submissions/v<N>/."""
    dest = project.version_dir(version)
    dest.parent.mkdir(parents=True, exist_ok=True)  # submissions/<slug>/ for another kernel
    shown = f"submissions/v{version}"
    tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.partial-{temp_tag()}", dir=str(project.submissions_dir)))
    written: list[str] = []
    try:
        os.chmod(tmp, mode_under_umask(0o777))  # mkdtemp makes it 0700, and it becomes submissions/v<N>
        for item in files:
            rel = _safe_relative(item.name)
            target = tmp.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                remote.file_download(item.url, target, str(rel))
            except RemoteError as exc:
                message = str(exc).replace(str(tmp), shown)  # the temp folder is about to go: never name it
                raise RemoteError(
                    f"{message}; nothing was written to {shown}/, run lorakit pull {version} again", status=exc.status
                ) from None
            written.append(str(rel))
        for marker in tmp.rglob("*.kaggle-partial"):
            marker.unlink()
        if raw_log:
            (tmp / "log.txt").write_text(log_readable(raw_log), encoding="utf-8")
            written.append("log.txt")
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".v{version}.old-{temp_tag()}", dir=str(project.submissions_dir)))
            os.rmdir(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _pulled_outputs_check(project: Project, version: int, written: list, status: KernelStatus,
                          warnings: list) -> tuple[Optional[dict], bool]:
    """(metrics.json, whether submission.csv may be submitted) of a pulled version; what is wrong with them
    goes into ``warnings``: the files are in place, so none of it is an error."""
    dest = project.version_dir(version)
    run = pulled_run_load(project, version)  # metrics.json and logits.npz read as untrusted input
    metrics = run.metrics
    if run.damage and run.damage != run.reason:  # fields read as unknown: the rest is sound
        warnings.append(f"v{version}: {run.damage}")
    elif run.damage:
        empty = "" if metrics is not None else "; the ledger's val_accuracy, run_minutes and run_config_hash stay empty"
        warnings.append(f"v{version}: {run.damage}: the files are in place, but it cannot be compared{empty}")
    elif metrics is None and status.status not in FAILED_KERNEL:  # a failed run's warning says why already
        warnings.append(f"v{version} has no metrics.json; the ledger's columns from it stay empty")
    if metrics is not None and metrics.get("interrupted") is True:
        warnings.append(
            f"v{version}'s run was interrupted (metrics.json says so): its adapter and predictions come from "
            "a partial training; see log.txt"
        )
    if "submission.csv" not in written:
        if status.status not in FAILED_KERNEL:
            warnings.append(f"v{version} has no submission.csv")
        return metrics, False
    try:
        submission_check(project, dest / "submission.csv", rows_expected_of(metrics))
    except UsageError as exc:
        warnings.append(f"submissions/v{version}/submission.csv is NOT a valid submission, do not submit it: {exc}")
        return metrics, False
    return metrics, status.status not in FAILED_KERNEL  # a failed run's file: its run did not finish


def kernel_output_pull(
    project: Project,
    remote: Remote,
    version=None,
    allow_running: bool = False,
    on_wait: Callable[[str], None] = lambda _m: None,
) -> PullResult:
    """Download a version's outputs into submissions/v<N>/ atomically, one pull of a version at a time.

    Once the files are in place, a bad metrics.json or an invalid submission.csv is a warning, not an error.
    """
    ledger = ledger_of(project)
    ledger.check_writable()
    version, ref = version_target(project, remote, version)
    with pull_lock(project, version, remote.policy.lock_wait, on_wait):
        status, warnings = pullable_status(remote, ref, version, allow_running)
        environment_record(project, remote, ref, version, status)
        written = outputs_fetch(project, remote, ref, version)
        metrics, submittable = _pulled_outputs_check(project, version, written, status, warnings)
        row = ledger.row(version) or {}
        warnings += run_mismatches(project, version, row, metrics)
        ledger.update(version, **pulled_fields(row, ref, status, metrics))
    dest = project.version_dir(version)
    return PullResult(version, dest, tuple(sorted(written)), metrics, tuple(warnings), status.status, submittable)


def pullable_status(remote: Remote, ref: KernelRef, version: int, allow_running: bool) -> tuple[KernelStatus, list]:
    """v<N>'s status, refused while the run goes on (unless ``allow_running``); with a warning when it failed."""
    status = remote.kernel_status_get(ref, version)
    if status.status in ("QUEUED", "RUNNING") and not allow_running:
        raise UsageError(f"v{version} is still {status.status}; wait with: lorakit status {version} --wait")
    if status.status in FAILED_KERNEL:
        why = f" ({' '.join(status.failure_message.split())})" if status.failure_message else ""
        return status, [f"v{version} ended {status.status}{why}: pulling what it left (see log.txt)"]
    return status, []


def outputs_fetch(project: Project, remote: Remote, ref: KernelRef, version: int) -> list:
    """List v<N>'s outputs and download them (and its log) into submissions/v<N>/; the files written."""
    files, raw_log = remote.kernel_output_list(ref, version)
    if not files and not raw_log:
        raise RemoteError(f"Kaggle lists no output for v{version} of {ref}")
    return _outputs_download(project, remote, version, files, raw_log)


def run_mismatches(project: Project, version: int, row: dict, metrics: Optional[dict]) -> list:
    """Where the run (its metrics.json) differs from what was pushed: another config_hash, another device."""
    if metrics is None:
        return []
    warnings = []
    pushed_hash, run_hash = row.get("config_hash", ""), str(metrics.get("config_hash") or "")
    if pushed_hash and run_hash and pushed_hash != run_hash:
        warnings.append(f"v{version} ran config_hash {run_hash[:12]}, but lorakit pushed {pushed_hash[:12]}: "
                        "the run did not use the pushed config")
    # rows pushed before lorakit recorded the accelerator: what the metadata asks for now
    asked = row.get("accelerator") or accelerator_asked(project.metadata, None)
    mismatch = device_mismatch(asked, str(metrics.get("device") or ""))
    if mismatch:
        warnings.append(f"v{version} {mismatch}")
    return warnings


def pulled_fields(row: dict, ref: KernelRef, status: KernelStatus, metrics: Optional[dict]) -> dict:
    """The ledger columns a pull fills: when and how the run ended, and what its metrics.json says."""
    fields: dict = {"pulled_at": utc_now(), "status": status.status, "val_accuracy": "", "run_minutes": "",
                    "run_config_hash": "", "val_rows": "", "train_minutes": "", "device": ""}
    found = metrics_columns(metrics or {})
    if row.get("trainable_params"):  # what the push counted stays; a row the push did not write gets the run's
        found.pop("trainable_params", None)
    fields.update(found)
    if not status.named:  # a reply that named no status (a failure message alone): shown, never recorded
        del fields["status"]
    if not row.get("kernel_ref"):
        fields["kernel_ref"] = str(ref)
    return fields


# ------------------------------------------------------------------------------------- the command line
def pull_show(out: Output, project, result) -> None:
    for warning in result.warnings:
        warn(warning)
    out.progress(f"pulled v{result.version} into {result.folder.relative_to(project.root)}/ ({len(result.files)} files)")
    for name in result.files:
        out.progress(f"  {name}")
    m = result.metrics
    if m:
        out.progress(
            f"val_accuracy {fmt(m.get('val_accuracy'))} | trainable {int(m.get('trainable_params') or 0):,} | "
            f"run {fmt(run_minutes_of(m), 1)} min | config_hash {str(m.get('config_hash') or '')[:12]} | "
            f"device {m.get('device') or '-'}"
        )
        dist = m.get("test_label_distribution")
        if isinstance(dist, dict):
            out.progress("test labels  " + "  ".join(f"{k} {v}" for k, v in dist.items()))


def pull_next(project, result) -> Optional[str]:
    """The step after a pull: submit a valid submission of a real run (its scores, once it is submitted);
    predict again from the adapter of a run that failed after saving it; nothing for a smoke run's or another
    test file's predictions."""
    row = ledger_of(project).row(result.version) or {}
    if row.get("submission_ref") or row.get("pending_status") in UNSETTLED:
        return "next: lorakit scores" if result.submittable else None
    if result.submittable:
        kind, _ = predicted_on_of(result.metrics or {}, {})
        return f"next: lorakit submit {result.version} --wait" if kind in ("competition", None) else None
    if result.has_adapter:
        return f"next: lorakit push --predict-from {result.version} -m MESSAGE"
    return None


@command(
    "pull",
    "download a version's outputs into submissions/v<N>/ and fill its ledger row",
    flag("version", nargs="?", help="kernel version number (default: the newest in the ledger)"),
    JSON,
)
def cmd_pull(args) -> int:
    project = project_of(args)
    result = kernel_output_pull(project, remote_new(), args.version, on_wait=lambda m: err(f"lorakit: {m}"))
    pull_show(args.out, project, result)
    step_next = pull_next(project, result)
    if step_next:
        args.out.progress(step_next)
    args.out.document(result.as_json())
    return 0
