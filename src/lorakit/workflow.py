"""The lorakit library: one function per command, named resource_verb. They raise LorakitError.

Offline validation always comes before the first network call.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional

from lorakit.errors import Interrupted, RemoteError, RunFailed, Timeout, Unconfirmed, UsageError
from lorakit.kernel import Effective, config_effective, kernel_load, script_render, submission_check
from lorakit.ledger import Ledger, mode_under_umask
from lorakit.project import (
    METADATA_FILE,
    DatasetRef,
    KernelRef,
    Project,
    adapter_dataset_ref,
    git_state,
    script_compile_check,
)
from lorakit.remote import KernelStatus, Remote, Submission, json_loads_safe

DEFAULT_TEST_ROWS = 8000
LABELS = ("World", "Sports", "Business", "Sci/Tech")
TERMINAL_KERNEL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED", "NEW_SCRIPT"}
FAILED_KERNEL = {"ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"}
_DESCRIPTION_VERSION = re.compile(r"^\s*v(\d+)\b")
UNCONFIRMED = "UNCONFIRMED"  # sent, reply lost, and the check failed: it may or may not have gone through
NOT_PUSHED = "NOT_PUSHED"  # an UNCONFIRMED push found not to have gone through
NOT_SUBMITTED = "NOT_SUBMITTED"  # an UNCONFIRMED submission found not to have gone through


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def version_parse(value) -> int:
    try:
        version = int(str(value).lstrip("vV"))
    except (TypeError, ValueError):
        raise UsageError(f"a version is a positive kernel version number, got {value!r}")
    if version < 1:
        raise UsageError(f"a version is a positive kernel version number, got {value!r}")
    return version


def ledger_of(project: Project) -> Ledger:
    return Ledger(project.ledger_path)


def token_new() -> str:
    """A unique token that finds one push or one submission on Kaggle when the reply to it was lost."""
    return "lk-" + secrets.token_hex(6)


# ----------------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class CheckReport:
    effective: Effective
    warnings: tuple
    positions: Optional[int]  # the encoder's usable positions; None when its config is not here offline

    def as_json(self) -> dict:
        e = self.effective
        return {
            "trainable_params": e.trainable_params,
            "param_breakdown": e.breakdown,
            "within_budget": e.within_budget,
            "config_hash": e.config_hash,
            "param_budget": e.budget,
            "overrides": e.overrides,
            "usable_positions": self.positions,
        }

    def lengths_text(self) -> str:
        cfg = self.effective.config
        if self.positions is None:
            return (f"unchecked: the config of {cfg.model} is not here offline (a hub id); the kernel checks "
                    "max_length and predict_max_length when it runs")
        return (f"max_length {cfg.max_length}, predict_max_length {cfg.predict_max_length} within the "
                f"{self.positions} usable positions of {cfg.model}")


def config_check(project: Project, sets: Iterable[str] = (), extra: Optional[dict] = None) -> CheckReport:
    """Offline preflight: metadata (already validated by project_load), compile, config (the kernel's rules,
    lengths included where the encoder's config is at hand), exact count."""
    script_compile_check(project.script_path)
    effective = config_effective(project, sets, extra)
    return CheckReport(effective, tuple(project.warnings), effective.kmod.usable_positions(effective.config))


# ------------------------------------------------------------------------------------------------ push
@dataclass(frozen=True)
class PushOptions:
    """What `lorakit push` (and `lorakit run`) was asked to push."""

    message: str
    sets: tuple = ()
    accelerator: Optional[str] = None
    no_run: bool = False
    predict_from: Optional[int] = None
    build_dir: Optional[Path] = None
    dry_run: bool = False


@dataclass(frozen=True)
class AdapterSource:
    """Version ``version``'s adapter, carried to Kaggle as the private dataset ``dataset``."""

    version: int
    folder: Path
    sha256: str  # the kernel's adapter_digest of folder
    dataset: DatasetRef
    upload: str = ""  # what the push did with the dataset: created, new version, reused ("" in a dry run)

    def as_json(self) -> dict:
        return {"version": self.version, "dataset": str(self.dataset), "adapter_from": self.dataset.mount,
                "adapter_sha256": self.sha256, "upload": self.upload or None}


@dataclass(frozen=True)
class PushResult:
    version: Optional[int]
    kernel: KernelRef
    url: str
    build_dir: Optional[Path]  # None once removed (a push without --build-dir)
    effective: Effective
    accelerator: str  # what the push asked for (accelerator_asked)
    adapter: Optional[AdapterSource] = None
    notes: tuple = ()
    status: str = ""  # the ledger's status of the new version: QUEUED, or NEW_SCRIPT (--no-run); "" in a dry run

    def as_json(self) -> dict:
        e = self.effective
        return {
            "version": self.version,
            "status": self.status or None,
            "dry_run": self.version is None,
            "kernel": str(self.kernel),
            "url": self.url,
            "build_dir": None if self.build_dir is None else str(self.build_dir),
            "config_hash": e.config_hash,
            "trainable_params": e.trainable_params,
            "param_budget": e.budget,
            "overrides": e.overrides,
            "accelerator": self.accelerator,
            "predict_from": None if self.adapter is None else self.adapter.as_json(),
            "notes": list(self.notes),
        }


def kernel_ref_resolve(project: Project, remote: Optional[Remote], notes: Optional[list] = None) -> KernelRef:
    ref = project.kernel
    if ref.is_placeholder:
        if remote is None:
            return ref
        owner = remote.username
        if notes is not None:
            notes.append(f"kernel-metadata.json holds the placeholder owner {ref.owner!r}: using your username {owner!r}")
        ref = ref.with_owner(owner)
    return ref


def accelerator_asked(metadata: dict, accelerator: Optional[str]) -> str:
    """What a push asks Kaggle for: --accelerator, else the metadata's machine_shape, else "gpu" when
    enable_gpu is set, else "none"."""
    shape = accelerator or metadata.get("machine_shape")
    if shape:
        return str(shape)
    return "gpu" if str(metadata.get("enable_gpu", False)).lower() == "true" else "none"


def build_write(
    project: Project,
    rendered: str,
    ref: KernelRef,
    folder: Path,
    accelerator: Optional[str] = None,
    dataset_sources: Iterable[str] = (),
) -> Path:
    """Write the build folder: the rendered script plus the metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script_name = project.script_path.name
    (folder / script_name).write_text(rendered, encoding="utf-8")
    meta = dict(project.metadata)
    meta["id"] = str(ref)
    meta["code_file"] = script_name
    sources = list(meta.get("dataset_sources") or [])
    sources += [source for source in dataset_sources if source not in sources]
    meta["dataset_sources"] = sources
    if accelerator:
        meta["machine_shape"] = accelerator
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def adapter_source_of(project: Project, version, kmod) -> AdapterSource:
    """Version ``version``'s pulled adapter (offline): its folder, digest and the dataset that will carry it."""
    version = version_parse(version)
    folder = project.version_dir(version) / "adapter"
    shown = folder.relative_to(project.root)
    if not (folder / "kit.json").is_file():
        raise UsageError(f"{shown}/kit.json does not exist: pull v{version} first (lorakit pull {version})")
    return AdapterSource(version, folder, kmod.adapter_digest(folder), adapter_dataset_ref(project.kernel, version))


def adapter_dataset_description(adapter: AdapterSource, kernel: KernelRef) -> str:
    """The dataset's description: what it holds, and the digest that says so (lorakit reuses it by that)."""
    return (f"The LoRA adapter of {kernel} v{adapter.version}, uploaded by lorakit for predict-only runs. "
            f"adapter_sha256 {adapter.sha256}")


def adapter_dataset_ensure(remote: Remote, adapter: AdapterSource, kernel: KernelRef, notes: list) -> AdapterSource:
    """Make the private dataset hold this adapter: reuse it when its description names the same digest,
    else upload the folder (a new dataset, or a new version of it); then wait until Kaggle can attach it."""
    ref = adapter_dataset_ref(kernel, adapter.version)  # the owner resolved: the placeholder's username
    description = remote.dataset_description_get(ref)
    if description is not None and adapter.sha256 in description:
        upload = "reused"
    else:
        title = f"{kernel.slug[:36]} v{adapter.version} adapter"
        text = adapter_dataset_description(adapter, kernel)
        if remote.dataset_publish(ref, adapter.folder, title, text, exists=description is not None):
            notes.append(f"Kaggle's reply to the upload of {ref} was lost, but it went through: not sent again")
        upload = "created" if description is None else "new version"
    dataset_ready_wait(remote, ref)
    return replace(adapter, dataset=ref, upload=upload)


def dataset_ready_wait(
    remote: Remote, ref: DatasetRef, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
) -> None:
    """Poll until Kaggle has processed the dataset (a kernel cannot attach it before), for LORAKIT_DATASET_WAIT_S."""
    start = clock()
    interval = max(0.0, remote.policy.poll_start)
    while True:
        status = remote.dataset_status_get(ref)
        if status == "READY":
            return
        if status in ("FAILED", "DELETED"):
            raise RemoteError(f"Kaggle could not process the adapter dataset {ref} ({status}); see {ref.url}")
        elapsed = clock() - start
        if elapsed + interval > remote.policy.dataset_wait:
            raise Timeout(f"the adapter dataset {ref} is still {status} after {elapsed:.0f} s; push again later")
        sleep(interval)
        interval = interval_next(remote, interval)


def interval_next(remote: Remote, interval: float) -> float:
    """The next poll interval: 1.5 times longer, up to LORAKIT_POLL_MAX_S."""
    return min(max(remote.policy.poll_max, 0.0), interval * 1.5) if interval else 0.0


def _row_replace(ledger: Ledger, version: int, notes: list, **fields) -> None:
    """Write a fresh row for a newly pushed version, replacing any row the ledger had for that number."""
    if ledger.row(version) is not None:
        notes.append(f"the ledger already had a row for v{version}; it is replaced")
        with ledger.transaction() as records:
            records[:] = [r for r in records if int(r["version"]) != int(version)]
    ledger.update(version, **fields)


def kernel_push(project: Project, remote: Optional[Remote], options: PushOptions) -> PushResult:
    if not options.message or not options.message.strip():
        raise UsageError("push needs a message: -m MSG")
    accelerator = options.accelerator
    if accelerator is not None and (not accelerator.strip() or re.search(r"\s", accelerator)):
        raise UsageError(f"--accelerator must be a machine shape such as NvidiaTeslaT4, got {accelerator!r}")
    ledger = ledger_of(project)
    ledger.check_writable()
    adapter = None
    extra = {}
    if options.predict_from is not None:
        adapter = adapter_source_of(project, options.predict_from, kernel_load(project))
        extra = {"adapter_from": adapter.dataset.mount, "adapter_sha256": adapter.sha256}
    report = config_check(project, options.sets, extra)
    effective = report.effective
    if not effective.within_budget:
        raise UsageError(
            f"{effective.trainable_params:,} trainable parameters exceed param_budget {effective.budget:,}; "
            "run lorakit check for the breakdown"
        )
    token = token_new()
    rendered = script_render(project, effective.overrides, token)  # once, before any network call: it compiles
    notes: list[str] = list(report.warnings)
    asked = accelerator_asked(project.metadata, accelerator)
    if remote is None and not options.dry_run:  # pragma: no cover - the CLI always passes one
        raise UsageError("push needs a Kaggle connection")
    ref = kernel_ref_resolve(project, None if options.dry_run else remote, notes)
    if adapter is not None and not options.dry_run:
        adapter = adapter_dataset_ensure(remote, adapter, ref, notes)
    folder = Path(options.build_dir) if options.build_dir else Path(tempfile.mkdtemp(prefix="lorakit-build-"))
    build_write(project, rendered, ref, folder, accelerator, [str(adapter.dataset)] if adapter else [])
    if options.dry_run:
        return PushResult(None, ref, ref.url, folder, effective, asked, adapter, tuple(notes))
    commit, dirty = git_state(project.root)
    fields = dict(
        pushed_at=utc_now(),
        message=options.message,
        overrides=json.dumps(effective.overrides, sort_keys=True, separators=(",", ":")),
        config_hash=effective.config_hash,
        trainable_params=effective.trainable_params,
        git_commit=commit,
        git_dirty=dirty if dirty is not None else "",
        kernel_ref=str(ref),
        push_token=token,
        predict_from=adapter.version if adapter else "",
        adapter_dataset=str(adapter.dataset) if adapter else "",
        adapter_sha256=adapter.sha256 if adapter else "",
        accelerator=asked,
    )
    after = None
    try:
        after = remote.kernel_version_latest(ref)
        reply, recovered = remote.kernel_push(folder, accelerator, options.no_run, ref, token, after)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        if after is None:  # interrupted before anything was sent
            raise
        version = after + 1  # what Kaggle numbers it if it went through
        _row_replace(ledger, version, notes, kernel_url=ref.url, status=UNCONFIRMED, **fields)
        advice = f"recorded as v{version} {UNCONFIRMED}: run lorakit status {version} to find out before pushing again"
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted while pushing; {advice}", version) from None
        raise Unconfirmed(f"{exc}; {advice}") from None
    finally:
        if not options.build_dir:
            shutil.rmtree(folder, ignore_errors=True)
    if reply.error:
        raise RemoteError(f"Kaggle refused the push of {ref}: {reply.error}")
    url = reply.url or ref.url
    if reply.invalid_sources:
        notes.append(f"Kaggle could not attach these sources: {', '.join(reply.invalid_sources)}")
    if not reply.version:
        raise RemoteError(f"Kaggle accepted the push of {ref} but returned no version number; see {url}")
    if recovered:
        notes.append(f"Kaggle's reply to the push was lost, but it went through as v{reply.version}: not sent again")
    status = "NEW_SCRIPT" if options.no_run else "QUEUED"
    _row_replace(ledger, reply.version, notes, kernel_url=url, status=status, **fields)
    return PushResult(reply.version, ref, url, Path(options.build_dir) if options.build_dir else None, effective, asked,
                      adapter, tuple(notes), status)


# ---------------------------------------------------------------------------------------------- status
def version_resolve(project: Project, version) -> int:
    if version is None:
        return ledger_of(project).latest_version()
    return version_parse(version)


def version_kernel(project: Project, remote: Remote, version: int) -> KernelRef:
    """The kernel a version was pushed to: the ledger's record, else the metadata (placeholder resolved)."""
    row = ledger_of(project).row(version)
    if row and row.get("kernel_ref"):
        with contextlib.suppress(UsageError):
            return KernelRef.parse(row["kernel_ref"])
    return kernel_ref_resolve(project, remote)


def push_confirm(project: Project, remote: Remote, version: int, ref: KernelRef) -> None:
    """When the ledger holds v<N> as UNCONFIRMED, find out from its source whether that push became v<N>.

    Raises UsageError (and records NOT_PUSHED) when it did not; returns when it did or was never in doubt.
    """
    ledger = ledger_of(project)
    row = ledger.row(version) or {}
    if row.get("status") != UNCONFIRMED:
        return
    source = remote.kernel_source_get(ref, version)
    token = row.get("push_token", "")
    if source is not None and token and token in source:
        return
    ledger.update(version, status=NOT_PUSHED)
    found = f"{ref} v{version} is another push" if source is not None else f"{ref} has no v{version}"
    raise UsageError(f"the push recorded as v{version} never reached Kaggle ({found}); push it again")


def kernel_status_get(project: Project, remote: Remote, version=None) -> tuple[int, KernelStatus]:
    version = version_resolve(project, version)
    ref = version_kernel(project, remote, version)
    push_confirm(project, remote, version, ref)
    status = remote.kernel_status_get(ref, version)
    ledger = ledger_of(project)
    if ledger.row(version) is not None:
        ledger.update(version, status=status.status)
    return version, status


def kernel_status_wait(
    project: Project,
    remote: Remote,
    version=None,
    timeout: float = 3600.0,
    on_poll: Callable[[int, KernelStatus, float], None] = lambda *_: None,
    on_log: Optional[Callable[[str], None]] = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, KernelStatus]:
    """Poll v<N>'s status until the run ends (or ``timeout`` seconds pass: Timeout).

    With ``on_log``, the run's log is followed instead of sleeping while it runs, and read to its end once it
    has ended; ``on_log`` gets each piece of text once.
    """
    version = version_resolve(project, version)
    if not timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    ref = version_kernel(project, remote, version)
    push_confirm(project, remote, version, ref)
    ledger = ledger_of(project)
    start = clock()
    deadline = time.monotonic() + timeout if timeout != math.inf else None
    interval = max(0.0, remote.policy.poll_start)
    last = None
    shown = 0  # log events handed to on_log so far

    def log_event(event: dict) -> None:
        text = event.get("data")
        if text is not None:
            on_log(str(text) if str(text).endswith("\n") else f"{text}\n")

    while True:
        status = remote.kernel_status_get(ref, version)
        elapsed = clock() - start
        if status != last:
            if ledger.row(version) is not None:
                ledger.update(version, status=status.status)
            last = status
        on_poll(version, status, elapsed)
        if status.status in TERMINAL_KERNEL:
            if on_log is not None:  # the stored log, past what the live stream showed
                remote.kernel_log_stream(ref, version, log_event, shown)
            return version, status
        following = on_log is not None and status.status == "RUNNING"  # the stream waits, not a sleep
        if elapsed + (0 if following else interval) > timeout:
            raise Timeout(
                f"v{version} is still {status.status} after {elapsed:.0f} s; run lorakit status {version} --wait again"
            )
        if following:
            before, shown = shown, remote.kernel_log_stream(ref, version, log_event, shown, deadline)
            if shown > before:
                continue  # the stream ended (or the deadline came): ask the status at once
        sleep(interval)
        interval = interval_next(remote, interval)


def kernel_failure_raise(version: int, status: KernelStatus) -> None:
    if status.status in FAILED_KERNEL:
        message = status.failure_message or "no failure message; see lorakit logs"
        raise RunFailed(f"v{version} ended {status.status}: {message}")


# ------------------------------------------------------------------------------------------------ logs
def log_readable(raw: str) -> str:
    """Kaggle's log is a JSON list of {stream_name, time, data}; return its text."""
    data = json_loads_safe(raw)
    if isinstance(data, list) and all(isinstance(e, dict) for e in data):
        parts = []
        for event in data:
            text = event.get("data")
            if text is None:
                continue
            text = str(text)
            parts.append(text if text.endswith("\n") else text + "\n")
        return "".join(parts)
    return raw if raw.endswith("\n") or not raw else raw + "\n"


def kernel_log_get(project: Project, remote: Remote, version=None) -> tuple[int, str]:
    version = version_resolve(project, version)
    ref = version_kernel(project, remote, version)
    _, raw = remote.kernel_output_list(ref, version)
    if not raw:
        raise UsageError(f"Kaggle has no log for v{version} yet")
    return version, log_readable(raw)


# ------------------------------------------------------------------------------------------------ pull
@dataclass(frozen=True)
class PullResult:
    version: int
    folder: Path
    files: tuple
    metrics: Optional[dict]
    warnings: tuple = ()
    status: str = ""

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


def metrics_read(folder: Path) -> Optional[dict]:
    """metrics.json of a version folder; None when absent, UsageError when it is not a JSON object."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    data = json_loads_safe(path.read_text(encoding="utf-8", errors="replace"))
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object")
    return data


def run_minutes_of(metrics: dict) -> Optional[float]:
    try:
        if metrics.get("total_seconds") is not None:
            seconds = float(metrics["total_seconds"])
        elif metrics.get("train_seconds") is not None or metrics.get("predict_seconds") is not None:
            seconds = float(metrics.get("train_seconds") or 0) + float(metrics.get("predict_seconds") or 0)
        else:
            return None
    except (TypeError, ValueError):
        return None
    return round(seconds / 60.0, 2)


def rows_expected_of(metrics: Optional[dict]) -> int:
    """The test rows a run's submission must hold: metrics.json's test_rows, else the competition's 8000."""
    with contextlib.suppress(TypeError, ValueError):
        if metrics and int(metrics.get("test_rows") or 0) > 0:
            return int(metrics["test_rows"])
    return DEFAULT_TEST_ROWS


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
    shown = f"submissions/v{version}"
    tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.partial-", dir=str(project.submissions_dir)))
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
            old = Path(tempfile.mkdtemp(prefix=f".v{version}.old-", dir=str(project.submissions_dir)))
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
    version = version_resolve(project, version)
    ledger = ledger_of(project)
    ledger.check_writable()
    with pull_lock(project, version, remote.policy.lock_wait, on_wait):
        ref = version_kernel(project, remote, version)
        push_confirm(project, remote, version, ref)
        warnings: list[str] = []
        status = remote.kernel_status_get(ref, version)
        if status.status in ("QUEUED", "RUNNING") and not allow_running:
            raise UsageError(f"v{version} is still {status.status}; wait with: lorakit status {version} --wait")
        if status.status in FAILED_KERNEL:
            warnings.append(f"v{version} ended {status.status}: pulling what it left (see log.txt)")
        files, raw_log = remote.kernel_output_list(ref, version)
        if not files and not raw_log:
            raise RemoteError(f"Kaggle lists no output for v{version} of {ref}")
        written = _outputs_download(project, remote, version, files, raw_log)
        dest = project.version_dir(version)
        try:
            metrics = metrics_read(dest)
        except UsageError:
            metrics = None
            warnings.append(
                f"submissions/v{version}/metrics.json is not a JSON object (cut short?): the files are in place, "
                "but the ledger's val_accuracy, run_minutes and run_config_hash stay empty"
            )
        else:
            if metrics is None:
                warnings.append(f"v{version} has no metrics.json; the ledger's columns from it stay empty")
        if metrics is not None and metrics.get("interrupted") is True:
            warnings.append(
                f"v{version}'s run was interrupted (metrics.json says so): its adapter and predictions come from "
                "a partial training; see log.txt"
            )
        if "submission.csv" in written:
            try:
                submission_check(kernel_load(project), dest / "submission.csv", rows_expected_of(metrics))
            except UsageError as exc:
                warnings.append(f"submissions/v{version}/submission.csv is NOT a valid submission, do not submit it: {exc}")
        else:
            warnings.append(f"v{version} has no submission.csv")
        row = ledger.row(version) or {}
        fields: dict = {"pulled_at": utc_now(), "status": status.status, "val_accuracy": "", "run_minutes": "",
                        "run_config_hash": ""}
        if metrics is not None:
            pushed_hash = row.get("config_hash", "")
            run_hash = str(metrics.get("config_hash") or "")
            if pushed_hash and run_hash and pushed_hash != run_hash:
                warnings.append(
                    f"v{version} ran config_hash {run_hash[:12]}, but lorakit pushed {pushed_hash[:12]}: "
                    "the run did not use the pushed config"
                )
            # rows pushed before lorakit recorded the accelerator: what the metadata asks for now
            asked = row.get("accelerator") or accelerator_asked(project.metadata, None)
            mismatch = device_mismatch(asked, str(metrics.get("device") or ""))
            if mismatch:
                warnings.append(f"v{version} {mismatch}")
            val = _float(metrics.get("val_accuracy"))
            minutes = run_minutes_of(metrics)
            fields.update(
                val_accuracy="" if val is None else val,
                run_minutes="" if minutes is None else minutes,
                run_config_hash=run_hash,
            )
            if not row.get("trainable_params") and metrics.get("trainable_params") is not None:
                fields["trainable_params"] = metrics["trainable_params"]  # a row the push did not write
        if not row.get("kernel_ref"):
            fields["kernel_ref"] = str(ref)
        ledger.update(version, **fields)
    return PullResult(version, dest, tuple(sorted(written)), metrics, tuple(warnings), status.status)


# -------------------------------------------------------------------------------------------- validate
def expected_rows_of(folder: Path) -> int:
    try:
        metrics = metrics_read(folder) if folder.is_dir() else None
    except UsageError:
        metrics = None  # a cut-short metrics.json must not stand in the way of a valid submission
    return rows_expected_of(metrics)


def submission_validate(project: Optional[Project], path: Path, rows: Optional[int] = None) -> int:
    """The kernel's submission rules on ``path`` (the project's kernel, else the one lorakit ships); its rows."""
    rows = int(rows) if rows else expected_rows_of(Path(path).parent)
    if rows < 1:
        raise UsageError("--rows must be positive")
    submission_check(kernel_load(project), Path(path), rows)
    return rows


# ---------------------------------------------------------------------------------------------- submit
@dataclass(frozen=True)
class SubmitResult:
    version: int
    ref: int
    remaining: Optional[int]  # submissions left today, read after this one; None when that read failed
    notes: tuple = ()

    def as_json(self) -> dict:
        return {"version": self.version, "ref": self.ref, "remaining_today": self.remaining, "notes": list(self.notes)}


def submission_wait(
    project: Project,
    remote: Remote,
    ref: int,
    version: Optional[int],
    timeout: float,
    on_poll: Callable[[Submission, float], None] = lambda *_: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Submission:
    start = clock()
    interval = max(0.0, remote.policy.poll_start)
    while True:
        try:
            sub = remote.submission_get(ref, project.competition)
        except RemoteError as exc:
            if exc.status != 404 or clock() - start > timeout:  # a fresh submission may not be readable yet
                raise
            sub = Submission(ref, "PENDING", None, None, "", "")
        elapsed = clock() - start
        on_poll(sub, elapsed)
        if sub.status in ("COMPLETE", "ERROR"):
            if version is not None:
                ledger_of(project).update(
                    version,
                    submission_status=sub.status,
                    public_score=sub.public_score,
                    private_score=sub.private_score,
                )
            if sub.status == "ERROR":
                raise RunFailed(f"submission {ref} failed to score: {sub.error or 'no error message'}")
            return sub
        if elapsed + interval > timeout:
            raise Timeout(f"submission {ref} is still {sub.status} after {elapsed:.0f} s; see lorakit scores later")
        sleep(interval)
        interval = interval_next(remote, interval)


def submission_description(version: int, config_hash: str, token: str, text: str) -> str:
    """``v<N>`` first (scores match versions by it), then the hash and the token, then the message."""
    head = f"v{version}" + (f" {config_hash[:12]}" if config_hash else "") + f" {token}"
    return (head + (f": {text}" if text else ""))[:1000]


def submission_create(project: Project, remote: Remote, version, message: Optional[str] = None) -> SubmitResult:
    version = version_parse(version)
    folder = project.version_dir(version)
    path = folder / "submission.csv"
    if not path.is_file():
        raise UsageError(f"{path.relative_to(project.root)} does not exist; run lorakit pull {version} first")
    submission_validate(project, path)  # the kernel's rules, before any network call
    ledger = ledger_of(project)
    ledger.check_writable()
    row = ledger.row(version) or {}
    if row.get("submission_status") == UNCONFIRMED:
        raise UsageError(
            f"v{version}'s last submission is {UNCONFIRMED}: run lorakit scores to find out whether it reached "
            "Kaggle before submitting again"
        )
    token = token_new()
    description = submission_description(version, row.get("config_hash", ""), token, message or row.get("message") or "")
    limits = remote.submission_limits_get(project.competition)
    if int(getattr(limits, "num_allowed_now", 0) or 0) <= 0:
        used = int(getattr(limits, "num_today", 0) or 0)
        raise UsageError(
            f"no submissions left today for {project.competition} ({used} used); try again after the daily reset "
            f"(if you have not joined, accept the rules at https://www.kaggle.com/competitions/{project.competition}/rules)"
        )
    try:
        ref, recovered = remote.submission_create(path, description, project.competition, token)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        ledger.update(
            version, submission_ref="", submission_token=token, submitted_at=utc_now(), submission_status=UNCONFIRMED
        )
        advice = f"recorded v{version}'s submission as {UNCONFIRMED}: run lorakit scores to find out before submitting again"
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted while submitting; {advice}", version) from None
        raise Unconfirmed(f"{exc}; {advice}") from None
    ledger.update(version, submission_ref=ref, submission_token=token, submitted_at=utc_now(), submission_status="PENDING")
    notes = []
    if recovered:
        notes.append(f"Kaggle's reply to the submission was lost, but it went through as {ref}: not sent again")
    remaining = None
    try:
        remaining = int(getattr(remote.submission_limits_get(project.competition), "num_allowed_now", 0) or 0)
    except RemoteError as exc:
        notes.append(f"could not read the submissions left today: {exc}")
    return SubmitResult(version, ref, remaining, tuple(notes))


# ------------------------------------------------------------------------------------------------- run
RUN_STEPS = {"push": "while pushing", "wait": "while waiting for the run", "pull": "while pulling",
             "submit": "while submitting", "score": "while waiting for the score"}


def run_resume(step: str, version: Optional[int], submit: bool) -> str:
    """The commands that finish a `lorakit run` interrupted at ``step`` (one of RUN_STEPS)."""
    if version is None:
        return "nothing was pushed; run it again"
    commands = {
        "wait": [f"lorakit status {version} --wait", f"lorakit pull {version}"],
        "pull": [f"lorakit pull {version}"],
        "submit": [],
        "score": ["lorakit scores"],
    }[step]
    if submit and step in ("wait", "pull", "submit"):
        commands.append(f"lorakit submit {version} --wait")
    return "resume with: " + ", then ".join(commands)


# ---------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class ScoreRow:
    version: Optional[int]
    submission: Submission
    val_accuracy: Optional[float]
    overrides: str
    message: str

    @property
    def gap(self) -> Optional[float]:
        s = self.submission
        if s.public_score is None or s.private_score is None:
            return None
        return round(s.public_score - s.private_score, 6)


@dataclass(frozen=True)
class Scores:
    rows: tuple
    best_public: Optional[ScoreRow]
    best_validation: Optional[dict]  # ledger row
    unrecorded: tuple = ()  # versions named by submissions but absent from the ledger
    not_submitted: tuple = ()  # versions whose UNCONFIRMED submission turned out never to have reached Kaggle

    def as_json(self) -> dict:
        return {
            "submissions": [
                {**r.submission.as_json(), "version": r.version, "gap": r.gap, "val_accuracy": r.val_accuracy,
                 "overrides": json_loads_safe(r.overrides) if r.overrides else None, "message": r.message}
                for r in self.rows
            ],
            "best_public": None if self.best_public is None else self.best_public.version,
            "best_validation": None if self.best_validation is None else int(self.best_validation["version"]),
            "unrecorded": list(self.unrecorded),
            "not_submitted": list(self.not_submitted),
        }


def _float(text) -> Optional[float]:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def scores_get(project: Project, remote: Remote) -> Scores:
    ledger = ledger_of(project)
    ledger.check_writable()
    submissions = remote.submissions_list(project.competition)
    rows = ledger.rows()
    by_ref = {}
    for r in rows:
        if r.get("submission_ref"):
            with contextlib.suppress(ValueError):
                by_ref[int(r["submission_ref"])] = int(r["version"])
    by_token = {r["submission_token"]: int(r["version"]) for r in rows if r.get("submission_token")}
    by_version = {int(r["version"]): r for r in rows}
    result: list[ScoreRow] = []
    # per version: the recorded submission (by ref, else by token), else the newest one named v<N>
    chosen: dict[int, Submission] = {}
    for sub in submissions:
        version = by_ref.get(sub.ref)
        if version is None:
            version = next((v for token, v in by_token.items() if token in sub.description), None)
        if version is None:
            match = _DESCRIPTION_VERSION.match(sub.description)
            version = int(match.group(1)) if match else None
        if version is not None:
            row = by_version.get(version, {})
            recorded, token = row.get("submission_ref", ""), row.get("submission_token", "")
            current = chosen.get(version)
            if recorded:
                if str(sub.ref) == recorded:
                    chosen[version] = sub
            elif token:
                if token in sub.description:
                    chosen[version] = sub
            elif current is None or sub.ref > current.ref:
                chosen[version] = sub
        row = by_version.get(version, {}) if version is not None else {}
        result.append(ScoreRow(version, sub, _float(row.get("val_accuracy")), row.get("overrides", ""), row.get("message", "")))
    updates = {v: sub for v, sub in chosen.items() if v in by_version}
    lost = tuple(
        v for v, r in sorted(by_version.items()) if r.get("submission_status") == UNCONFIRMED and v not in chosen
    )
    if updates or lost:
        with ledger.transaction() as records:
            for record in records:
                version = int(record["version"])
                if version in lost:
                    record["submission_status"] = NOT_SUBMITTED
                sub = updates.get(version)
                if sub is None:
                    continue
                record["submission_ref"] = str(sub.ref)
                record["submission_status"] = sub.status
                record["public_score"] = "" if sub.public_score is None else repr(sub.public_score)
                record["private_score"] = "" if sub.private_score is None else repr(sub.private_score)
    result.sort(key=lambda r: (r.submission.public_score is None, -(r.submission.public_score or 0.0), -r.submission.ref))
    best_public = next((r for r in result if r.submission.public_score is not None and r.version is not None), None)
    with_val = [r for r in ledger.rows() if _float(r.get("val_accuracy")) is not None]
    best_val = max(with_val, key=lambda r: (_float(r["val_accuracy"]), int(r["version"]))) if with_val else None
    unrecorded = tuple(sorted(v for v in chosen if v not in by_version))
    return Scores(tuple(result), best_public, best_val, unrecorded, lost)


def scores_plot(project: Project, path: Path) -> Path:
    """PNG of public score and validation accuracy by version, from the ledger."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install matplotlib")
    rows = ledger_of(project).rows()
    versions = [int(r["version"]) for r in rows]
    public = [_float(r.get("public_score")) for r in rows]
    val = [_float(r.get("val_accuracy")) for r in rows]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- leaderboard
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
        raise UsageError("--top must be positive")
    zip_path = remote.leaderboard_download(project.competition, Path(download)) if download else None
    mine_names = set()
    with contextlib.suppress(RemoteError):
        mine_names = {s.team_name for s in remote.submissions_list(project.competition) if s.team_name}
    if not mine_names:
        mine_names = {remote.username}

    def enough(rows) -> bool:  # stop paging once the top rows and my own row are read
        return len(rows) >= top and any(name in mine_names for _, name, _, _ in rows)

    rows = remote.leaderboard_get(project.competition, pages=max(1, (top + 99) // 100) + 9, enough=enough)
    ranked = [
        LeaderboardRow(i + 1, tid, name, score, date, name in mine_names)
        for i, (tid, name, score, date) in enumerate(rows)
    ]
    shown = ranked[:top]
    me = next((r for r in ranked if r.mine), None)
    return shown, me, zip_path


# --------------------------------------------------------------------------------------------- compare
def _read_labels(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    out = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "ID" not in reader.fieldnames or "Label" not in reader.fieldnames:
            raise UsageError(f"{path} must have the columns ID,Label")
        for row in reader:
            try:
                out[int(row["ID"])] = int(row["Label"])
            except (TypeError, ValueError):
                raise UsageError(f"{path}: a row is not integer ID,Label: {row}")
    return out


def _read_confidence(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    out = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        cols = [c for c in (reader.fieldnames or []) if c != "ID"]
        if "ID" not in (reader.fieldnames or []) or not cols:
            return None
        for row in reader:
            try:
                out[int(row["ID"])] = max(float(row[c]) for c in cols)
            except (TypeError, ValueError):
                return None
    return out


@dataclass(frozen=True)
class Comparison:
    a: int
    b: int
    rows: int
    agreement: float
    per_class: dict  # label -> (rows A predicts it, agreement of B on them, rows B predicts it, agreement of A)
    distribution_a: dict
    distribution_b: dict
    disagreements: int
    confidence_a: Optional[float]
    confidence_b: Optional[float]

    def as_json(self) -> dict:
        per_class = {
            name: {"a_rows": na, "b_agrees": agree_b, "b_rows": nb, "a_agrees": agree_a}
            for name, (na, agree_b, nb, agree_a) in self.per_class.items()
        }
        return {**dataclasses.asdict(self), "per_class": per_class}


def submissions_compare(project: Project, a, b) -> Comparison:
    va, vb = version_parse(a), version_parse(b)
    da, db = project.version_dir(va), project.version_dir(vb)
    la, lb = _read_labels(da / "submission.csv"), _read_labels(db / "submission.csv")
    if set(la) != set(lb):
        raise UsageError(f"v{va} and v{vb} cover different IDs ({len(la)} and {len(lb)} rows)")
    ids = sorted(la)
    if not ids:
        raise UsageError(f"v{va}'s submission is empty")
    agree = sum(la[i] == lb[i] for i in ids)
    per_class = {}
    for k, name in enumerate(LABELS):
        rows_a = [i for i in ids if la[i] == k]
        rows_b = [i for i in ids if lb[i] == k]
        per_class[name] = (
            len(rows_a),
            sum(lb[i] == k for i in rows_a) / len(rows_a) if rows_a else None,
            len(rows_b),
            sum(la[i] == k for i in rows_b) / len(rows_b) if rows_b else None,
        )
    dist_a = {name: sum(1 for i in ids if la[i] == k) for k, name in enumerate(LABELS)}
    dist_b = {name: sum(1 for i in ids if lb[i] == k) for k, name in enumerate(LABELS)}
    differ = [i for i in ids if la[i] != lb[i]]
    ca, cb = _read_confidence(da / "probabilities.csv"), _read_confidence(db / "probabilities.csv")
    conf_a = conf_b = None
    if ca is not None and cb is not None and differ:
        conf_a = sum(ca.get(i, 0.0) for i in differ) / len(differ)
        conf_b = sum(cb.get(i, 0.0) for i in differ) / len(differ)
    return Comparison(va, vb, len(ids), agree / len(ids), per_class, dist_a, dist_b, len(differ), conf_a, conf_b)


# ----------------------------------------------------------------------------------------------- quota
@dataclass(frozen=True)
class Quota:
    used_hours: Optional[float]
    total_hours: Optional[float]
    refresh: str
    minutes_by_version: tuple  # (version, minutes)

    @property
    def left_hours(self) -> Optional[float]:
        if self.used_hours is None or self.total_hours is None:
            return None
        return max(0.0, self.total_hours - self.used_hours)

    def as_json(self) -> dict:
        return {
            "used_hours": self.used_hours,
            "total_hours": self.total_hours,
            "left_hours": self.left_hours,
            "refresh": self.refresh or None,
            "runs": [{"version": v, "run_minutes": m} for v, m in self.minutes_by_version],
        }


def quota_get(project: Project, remote: Remote) -> Quota:
    ledger = ledger_of(project)
    rows = ledger.rows()
    response = remote.quota_get()
    gpu = getattr(response, "gpu_quota", None)
    used = total = None
    if gpu is not None and getattr(gpu, "time_used", None) is not None:
        used = gpu.time_used.total_seconds() / 3600
    if gpu is not None and getattr(gpu, "total_time_allowed", None) is not None:
        total = gpu.total_time_allowed.total_seconds() / 3600
    refresh = getattr(response, "quota_refresh_time", None)
    refresh_text = refresh.isoformat(timespec="minutes") if hasattr(refresh, "isoformat") else ""
    minutes = tuple(
        (int(r["version"]), float(r["run_minutes"])) for r in rows if _float(r.get("run_minutes")) is not None
    )
    return Quota(used, total, refresh_text, minutes)

