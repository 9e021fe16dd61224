"""The lorakit library: one function per command, named resource_verb. They raise LorakitError.

Offline validation always comes before the first network call.
"""

from __future__ import annotations

import contextlib
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

from lorakit.errors import (
    ArgumentError, FlagNeeded, Interrupted, LedgerError, LorakitError, RemoteError, RunFailed, Timeout, Unconfirmed,
    UsageError,
)
from lorakit.kernel import Effective, adapter_digest, config_effective, script_render, submission_check
from lorakit.ledger import SENDING, Ledger, cells, kernel_same, mode_under_umask
from lorakit.project import (
    METADATA_FILE,
    DatasetRef,
    KernelRef,
    Project,
    adapter_dataset_ref,
    adapter_version_of,
    git_state,
    script_compile_check,
)
from lorakit.remote import KernelStatus, Remote, Submission
from lorakit.retry import Poll, poll_until
from lorakit.stats import finite_number
from lorakit.transport import json_loads_safe

DEFAULT_TEST_ROWS = 8000
LABELS = ("World", "Sports", "Business", "Sci/Tech")
TERMINAL_KERNEL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED", "NEW_SCRIPT"}
FAILED_KERNEL = {"ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"}
_DESCRIPTION_VERSION = re.compile(r"^\s*v(\d+)\b(?:\s+([A-Za-z0-9_-]+/[A-Za-z0-9_-]+))?")
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


def ledger_of(project: Project, ref: Optional[KernelRef] = None) -> Ledger:
    """The ledger's rows of kernel ``ref`` (default: the project's, --kernel or the metadata's)."""
    return Ledger(project.ledger_path, str(ref or project.kernel), str(project.home or project.kernel))


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
    lengths included where the encoder's config is at hand), exact count, and nothing to download when the
    metadata turns the internet off."""
    script_compile_check(project.script_path)
    effective = config_effective(project, sets, extra)
    needs, warnings = internet_needs(project, effective)
    if needs:
        raise UsageError("enable_internet is false in kernel-metadata.json, but " + "; and ".join(needs)
                         + " (or set enable_internet to true)")
    return CheckReport(effective, (*project.warnings, *warnings), effective.usable_positions())


def encoder_of(project: Project, effective: Effective) -> Optional[str]:
    """The pretrained encoder a run loads (a hub id or a folder); None when it needs none: a smoke run's is a
    tiny random one, and a predict-from adapter may carry its own base. The kernel's rule (load_adapter_model):
    a predict-from run on the default model loads the encoder its adapter was trained on."""
    cfg = effective.config
    if cfg.smoke:
        return None
    if not cfg.adapter_from or cfg.model != effective.default_model:
        return cfg.model
    version = adapter_version_of(cfg.adapter_from)
    folder = project.version_dir(version) / "adapter" if version else Path(cfg.adapter_from)
    if (folder / "base").is_dir():
        return None
    kit = json_loads_safe((folder / "kit.json").read_text(encoding="utf-8")) if (folder / "kit.json").is_file() else None
    trained = kit.get("config") if isinstance(kit, dict) else None
    return str(trained.get("model") or cfg.model) if isinstance(trained, dict) else cfg.model


def internet_needs(project: Project, effective: Effective) -> tuple[list, list]:
    """What a run would download although kernel-metadata.json has enable_internet false, each with what to
    attach instead; and warnings where it cannot be told offline. (Nothing when the internet is on.)"""
    if str(project.metadata.get("enable_internet", True)).lower() != "false":
        return [], []
    cfg = effective.config
    needs, warnings = [], []
    encoder = encoder_of(project, effective)
    if encoder is not None and not encoder.startswith("/"):
        needs.append(f"model {encoder} is a Hugging Face hub id, which needs the internet: attach a copy (a Kaggle "
                     "model in model_sources, or a dataset) and pass --set model=/kaggle/input/<its folder>")
    datasets = [d for d in project.metadata.get("dataset_sources") or []]
    attach = f"attach the AG News CSVs {effective.ag_news_dataset} in dataset_sources and keep train_data=auto"
    if cfg.train_data.startswith("hf:"):
        needs.append(f"train_data {cfg.train_data} downloads from the Hugging Face hub: {attach}")
    elif cfg.train_data == "auto" and not cfg.smoke and effective.ag_news_dataset not in datasets:
        fallback = "train_data auto falls back to hf:ag_news, which needs the internet, when no attached dataset " \
                   "holds AG News's train.csv"
        if datasets:
            warnings.append(f"{fallback}; unless one of {', '.join(datasets)} does, {attach}")
        else:
            needs.append(f"{fallback} (none is attached): {attach}")
    return needs, warnings


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
    again: bool = False  # push even when this kernel already ran the same config_hash to COMPLETE
    for_submission: bool = False  # set by run_pipeline for run --submit: a smoke config is refused before pushing
    sweep_id: str = ""  # the sweep this push is an arm of (lorakit sweep), written into its ledger row


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


def adapter_source_of(project: Project, version) -> AdapterSource:
    """Version ``version``'s pulled adapter (offline): its folder, digest and the dataset that will carry it."""
    version = version_parse(version)
    folder = project.version_dir(version) / "adapter"
    shown = folder.relative_to(project.root)
    if not (folder / "kit.json").is_file():
        raise UsageError(f"{shown}/kit.json does not exist: pull v{version} first (lorakit pull {version})")
    return AdapterSource(version, folder, adapter_digest(project, folder), adapter_dataset_ref(project.kernel, version))


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


def dataset_ready_wait(remote: Remote, ref: DatasetRef) -> None:
    """Poll until Kaggle has processed the dataset (a kernel cannot attach it before), for LORAKIT_DATASET_WAIT_S."""

    def seen(status: str, _elapsed: float) -> bool:
        if status in ("FAILED", "DELETED"):
            raise RemoteError(f"Kaggle could not process the adapter dataset {ref} ({status}); see {ref.url}")
        return status == "READY"

    def stalled(status: str, elapsed: float) -> Timeout:
        return Timeout(f"the adapter dataset {ref} is still {status} after {elapsed:.0f} s; push again later")

    poll_until(lambda: remote.dataset_status_get(ref), seen, Poll.of(remote.policy, remote.policy.dataset_wait),
               stalled)


def build_dir_check(project: Project, build_dir: Path) -> Path:
    """Refuse a build folder that would overwrite the project's own files: the repository root, or a folder
    holding the kernel script (the build copy has its name, and the metadata beside it)."""
    folder = Path(build_dir).resolve()
    script_folder = project.script_path.resolve().parent
    if folder == project.root.resolve() or folder == script_folder or folder in script_folder.parents:
        raise UsageError(f"--build-dir {build_dir} would overwrite {project.script_path.relative_to(project.root)} "
                         "or the metadata: choose a folder outside them (e.g. build/)")
    return folder


def adapter_effective(effective: Effective, adapter: AdapterSource) -> Effective:
    """A predict-only push's count: that of the config the adapter was trained with (its kit.json)."""
    try:
        trained = json.loads((adapter.folder / "kit.json").read_text(encoding="utf-8"))["config"]
        if not isinstance(trained, dict):
            raise TypeError
    except (OSError, ValueError, TypeError, KeyError):
        raise UsageError(f"{adapter.folder}/kit.json is not the kit.json of a run: pull v{adapter.version} again")
    return effective.trained(trained, f"{adapter.folder}/kit.json")


def text_checked(text: str, what: str) -> str:
    """``text`` as it will be sent and stored; a byte that is not UTF-8 is refused before anything is sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} holds a byte that is not UTF-8 text (at character {exc.start + 1}): retype it") from None
    return text


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


def quota_check(remote: Remote, config, asked: str, warn: Callable[[str], None], notes: list) -> None:
    """``warn`` when the run's time limit does not fit in the GPU hours left this week; a note when the quota
    cannot be read (never a refusal); nothing when it fits or no GPU is asked for."""
    if asked == "none":
        return
    limit_hours = float(getattr(config, "time_limit_minutes", 0) or 0) / 60
    left, why = gpu_hours_left(lambda: remote)
    if left is None:
        notes.append(f"{why}; pushed without comparing the run's time limit")
    elif limit_hours > left:
        warn(f"the run may take up to {limit_hours:.1f} h (time_limit_minutes {config.time_limit_minutes:g}), but "
             f"{left:.1f} h of GPU quota are left this week: it may stop early; pushing anyway")


def gpu_hours_left(remote_of: Callable[[], Remote]) -> tuple[Optional[float], str]:
    """(GPU hours left this week, "") from Kaggle's quota; (None, why) when they cannot be read (no remote, a
    failed call, a reply without them)."""
    try:
        used, total = gpu_hours(remote_of().quota_get())
    except LorakitError as exc:
        return None, f"could not read the GPU quota ({exc})"
    if used is None or total is None:
        return None, "could not read the GPU quota (Kaggle returned no GPU quota)"
    return max(0.0, total - used), ""


def gpu_hours(response) -> tuple[Optional[float], Optional[float]]:
    """(used, allowed) GPU hours this week of a quota reply; None for what it lacks."""
    gpu = getattr(response, "gpu_quota", None)
    used, total = getattr(gpu, "time_used", None), getattr(gpu, "total_time_allowed", None)
    return (None if used is None else used.total_seconds() / 3600,
            None if total is None else total.total_seconds() / 3600)


@dataclass(frozen=True)
class PushPlan:
    """What a push will send, settled offline before any network call: the effective config (an adapter's
    count for a predict-only push), the adapter, the rendered script and its token, the accelerator asked."""

    effective: Effective
    adapter: Optional[AdapterSource]
    record: dict  # push_record_of: in the script's push record block, and in the ledger row
    rendered: str
    build_dir: Optional[Path]  # --build-dir, checked
    warnings: tuple  # the check's

    @property
    def token(self) -> str:
        return self.record["push_token"]

    @property
    def asked(self) -> str:
        """accelerator_asked"""
        return self.record["accelerator"]

    @property
    def sources(self) -> list:
        """The datasets the build copy's metadata adds: the adapter's."""
        return [str(self.adapter.dataset)] if self.adapter else []


@dataclass(frozen=True)
class PushTarget:
    """Where a push goes: the project, the connection, the kernel (its owner resolved) and its ledger."""

    project: Project
    remote: Remote
    ref: KernelRef
    ledger: Ledger


def kernel_push(project: Project, remote: Optional[Remote], options: PushOptions,
                warn: Callable[[str], None] = lambda _m: None) -> PushResult:
    """Check, render and push a new version, recorded before it is sent; ``warn`` hears, before sending,
    what may make the push a waste (a run longer than the GPU quota left)."""
    plan = push_plan(project, options)
    notes: list[str] = list(plan.warnings)
    if options.dry_run:
        ref = kernel_ref_resolve(project, None, notes)
        _build_render(project, plan, ref, options.accelerator)
        return PushResult(None, ref, ref.url, plan.build_dir, plan.effective, plan.asked, plan.adapter, tuple(notes))
    if remote is None:  # pragma: no cover - the CLI always passes one
        raise UsageError("push needs a Kaggle connection")
    ref = kernel_ref_resolve(project, remote, notes)
    target = PushTarget(project, remote, ref, ledger_of(project, ref))
    plan = push_preflight(target, plan, options, warn, notes)
    version, url, status = push_send(target, plan, options, notes)
    return PushResult(version, ref, url, plan.build_dir, plan.effective, plan.asked, plan.adapter, tuple(notes), status)


def push_options_check(project: Project, options: PushOptions) -> Optional[Path]:
    """The message and --accelerator usable, the ledger writable; the checked --build-dir, if any."""
    if not options.message or not options.message.strip():
        raise UsageError("push needs a message: -m MSG")
    text_checked(options.message, "-m")
    accelerator = options.accelerator
    if accelerator is not None and (not accelerator.strip() or re.search(r"\s", accelerator)):
        raise UsageError(f"--accelerator must be a machine shape such as NvidiaTeslaT4, got {accelerator!r}")
    build_dir = build_dir_check(project, options.build_dir) if options.build_dir else None
    ledger_of(project).check_writable()
    return build_dir


def push_plan(project: Project, options: PushOptions) -> PushPlan:
    """Everything a push checks offline (options, adapter, config, budget, smoke) and the rendered script."""
    build_dir = push_options_check(project, options)
    adapter = None
    extra = {}
    if options.predict_from is not None:
        adapter = adapter_source_of(project, options.predict_from)
        extra = {"adapter_from": adapter.dataset.mount, "adapter_sha256": adapter.sha256}
    report = config_check(project, options.sets, extra)
    effective = report.effective if adapter is None else adapter_effective(report.effective, adapter)
    if not effective.within_budget:
        raise UsageError(
            f"{effective.trainable_params:,} trainable parameters exceed param_budget {effective.budget:,}; "
            "run lorakit check for the breakdown"
        )
    if options.for_submission and effective.config.smoke:
        raise FlagNeeded("a smoke run predicts synthetic data and is never submitted: drop --submit, or add "
                         "--allow-smoke to exercise the loop against a stand-in; nothing pushed")
    record = push_record_of(project, effective, options)
    rendered = script_render(project, effective, record["push_token"], record)  # once, before any network call
    warnings = (*report.warnings, *([effective.budget_warning] if effective.budget_warning else []))
    return PushPlan(effective, adapter, record, rendered, build_dir, warnings)


def push_record_of(project: Project, effective: Effective, options: PushOptions) -> dict:
    """What only the pushing machine knows of a push (its token, time, message, git state, the accelerator
    asked, the sweep it is an arm of) and the config_hash and count it was pushed with: written into the script's push record block, which
    the run copies into metrics.json and `lorakit sync` reads back, and into the ledger row."""
    commit, dirty = git_state(project.root)
    return dict(push_token=token_new(), pushed_at=utc_now(), message=options.message, git_commit=commit,
                git_dirty=dirty, accelerator=accelerator_asked(project.metadata, options.accelerator),
                config_hash=effective.config_hash, trainable_params=effective.trainable_params,
                sweep_id=options.sweep_id)


def push_preflight(target: PushTarget, plan: PushPlan, options: PushOptions, warn: Callable[[str], None],
                   notes: list) -> PushPlan:
    """Before sending: settle the pushes left SENDING, refuse a config already run (unless --again), compare
    the time limit with the GPU quota, and upload the adapter; the plan with the adapter as uploaded."""
    settled = pushes_settle(target.project, target.remote, target.ref)
    notes += [f"a push left {SENDING} went through as v{r['version']} ({r['status']})" for r in settled]
    if not options.again:
        push_duplicate_check(target.ledger.rows(), plan.effective.config_hash, settled)
    quota_check(target.remote, plan.effective.config, plan.asked, warn, notes)
    if plan.adapter is None:
        return plan
    return replace(plan, adapter=adapter_dataset_ensure(target.remote, plan.adapter, target.ref, notes))


def push_send(target: PushTarget, plan: PushPlan, options: PushOptions, notes: list) -> tuple:
    """Write the build folder (a temporary one unless --build-dir), then record and send the push."""
    folder = plan.build_dir or Path(tempfile.mkdtemp(prefix="lorakit-build-"))
    try:
        build_write(target.project, plan.rendered, target.ref, folder, options.accelerator, plan.sources)
        return _push_send(target, folder, plan, options, notes)
    finally:
        if plan.build_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _build_render(project: Project, plan: PushPlan, ref: KernelRef, accelerator: Optional[str]) -> None:
    """A dry run's build folder: kept with --build-dir, else rendered in a temporary folder and removed."""
    if plan.build_dir is not None:
        build_write(project, plan.rendered, ref, plan.build_dir, accelerator, plan.sources)
        return
    with tempfile.TemporaryDirectory(prefix="lorakit-build-") as folder:
        build_write(project, plan.rendered, ref, Path(folder), accelerator, plan.sources)


def _push_fields(plan: PushPlan) -> dict:
    """The ledger columns a push writes when it is recorded: its push record, overrides and adapter."""
    adapter = plan.adapter
    return dict(
        {**plan.record, "git_dirty": "" if plan.record["git_dirty"] is None else plan.record["git_dirty"]},
        overrides=overrides_text(plan.effective.overrides),
        predict_from=adapter.version if adapter else "",
        adapter_dataset=str(adapter.dataset) if adapter else "",
        adapter_sha256=adapter.sha256 if adapter else "",
    )


def overrides_text(overrides: dict) -> str:
    """The ledger's overrides cell: canonical JSON."""
    return json.dumps(overrides, sort_keys=True, separators=(",", ":"))


def overrides_of(row: Optional[dict]) -> Optional[dict]:
    """A ledger row's overrides cell read back; None when it holds no JSON object."""
    data = json_loads_safe((row or {}).get("overrides") or "")
    return data if isinstance(data, dict) else None


def _push_send(target: PushTarget, folder: Path, plan: PushPlan, options: PushOptions, notes: list) -> tuple:
    """Record the push (SENDING) before it leaves, send it, then number its row; (version, url, status)."""
    remote, ledger, ref, token = target.remote, target.ledger, target.ref, plan.token
    after = remote.kernel_version_latest(ref)
    fields = _push_fields(plan)
    ledger.add_provisional(token, status=SENDING, sent_after=after, kernel_url=ref.url, **fields)  # or nothing is sent
    try:
        reply, recovered = remote.kernel_push(folder, options.accelerator, options.no_run, ref, token, after)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        version = after + 1  # what Kaggle numbers it if it went through
        _push_record(target, token, version, notes, status=UNCONFIRMED)
        advice = f"recorded as v{version} {UNCONFIRMED}: run lorakit status {version} to find out before pushing again"
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted while pushing; {advice}", version) from None
        raise Unconfirmed(f"{exc}; {advice}") from None
    except RemoteError as exc:
        if exc.status is not None and 400 <= exc.status < 500:  # refused: nothing was pushed
            ledger.drop_provisional(token)
        raise
    url = reply.url or ref.url
    if reply.error:
        ledger.drop_provisional(token)
        raise RemoteError(f"Kaggle refused the push of {ref}: {reply.error}")
    if reply.invalid_sources:
        notes.append(f"Kaggle could not attach these sources: {', '.join(reply.invalid_sources)}")
    if not reply.version:  # the row stays SENDING: the next command finds the version by the token
        raise RemoteError(f"Kaggle accepted the push of {ref} but returned no version number; see {url}")
    if recovered:
        notes.append(f"Kaggle's reply to the push was lost, but it went through as v{reply.version}: not sent again")
    status = "NEW_SCRIPT" if options.no_run else "QUEUED"
    _push_record(target, token, reply.version, notes, kernel_url=url, status=status)
    return reply.version, url, status


def _push_record(target: PushTarget, token: str, version: int, notes: list, **fields) -> None:
    """Number the SENDING row of a sent push; when the ledger cannot be written, the row stays SENDING and
    the message says so (the next command finds the version by the token, never sending again)."""
    try:
        if target.ledger.settle(token, version, **fields):
            notes.append(f"the ledger already had a row for v{version}; it is replaced (a push that never arrived)")
    except (OSError, LedgerError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"sent the push of {target.ref} (v{version} if it went through), but the ledger could not "
                          f"be updated ({reason}): its row stays {SENDING}; lorakit status settles it by its token, "
                          "do not push it again") from None


# ---------------------------------------------------------------------------------------------- status
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


def kernel_status_get(project: Project, remote: Remote, version=None) -> tuple[int, KernelStatus]:
    version, ref = version_target(project, remote, version)
    status = remote.kernel_status_get(ref, version)
    status_record(ledger_of(project), version, status)
    return version, status


def status_record(ledger: Ledger, version: int, status: KernelStatus) -> None:
    """v<N>'s row gets the status Kaggle named (a reply that named none, or a version without a row: nothing)."""
    if status.named and ledger.row(version) is not None:
        ledger.update(version, status=status.status)


class LogFollower:
    """Hands each piece of a run's log to ``on_log`` once: from the live stream while the run goes on, then the
    rest of the stored log once it has ended. When the stream is unavailable (a 404, or it keeps dropping) it
    says so in one line and falls back to the stored log, read once the run has ended."""

    def __init__(self, remote: Remote, ref: KernelRef, version: int, on_log: Callable[[str], None],
                 deadline: Optional[float]):
        self.remote, self.ref, self.version, self.on_log = remote, ref, version, on_log
        self.deadline = deadline  # a time.monotonic() the stream never waits past; None: none
        self.shown = 0  # log events handed on so far
        self.streaming = True

    def _event(self, event: dict) -> None:
        self.shown += 1  # counted here: a stream that fails half way has handed these on all the same
        text = event.get("data")
        if text is not None:
            self.on_log(str(text) if str(text).endswith("\n") else f"{text}\n")

    def _stream(self, deadline: Optional[float]) -> None:
        try:
            self.remote.kernel_log_stream(self.ref, self.version, self._event, self.shown, deadline)
        except RemoteError as exc:
            self.streaming = False
            print(f"lorakit: note: the log stream of v{self.version} is unavailable ({exc}); following its "
                  "status instead, the log comes once the run has ended", file=self.remote.log)

    def live(self, status: KernelStatus) -> bool:
        """Whether the stream waits for the next status read (instead of a sleep): while the run runs."""
        return self.streaming and status.status == "RUNNING"

    def follow(self) -> bool:
        """Stream while the run goes on (until the stream ends or the deadline); whether new lines came."""
        before = self.shown
        if self.streaming:
            self._stream(self.deadline)
        return self.shown > before

    def finish(self) -> None:
        """The stored log past what was shown: through the stream, else from the version's output listing."""
        if self.streaming:
            self._stream(None)
            if self.streaming:
                return
        _, raw = self.remote.kernel_output_list(self.ref, self.version)
        events = json_loads_safe(raw)
        if isinstance(events, list):
            for event in events[self.shown:]:
                self._event(event if isinstance(event, dict) else {})
        elif raw and not self.shown:
            self.on_log(log_readable(raw))


def kernel_status_wait(
    project: Project,
    remote: Remote,
    version=None,
    timeout: float = 3600.0,
    on_poll: Callable[[int, KernelStatus, float], None] = lambda *_: None,
    on_log: Optional[Callable[[str], None]] = None,
) -> tuple[int, KernelStatus]:
    """Poll v<N>'s status until the run ends (or ``timeout`` seconds pass: Timeout), recording each change.

    With ``on_log``, the run's log is followed instead of sleeping while it runs, and read to its end once it
    has ended; ``on_log`` gets each piece of text once (see LogFollower).
    """
    if not timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    version, ref = version_target(project, remote, version)
    ledger = ledger_of(project)
    deadline = time.monotonic() + timeout if timeout != math.inf else None
    log = LogFollower(remote, ref, version, on_log, deadline) if on_log is not None else None
    recorded: list = [None]

    def seen(status: KernelStatus, elapsed: float) -> bool:
        if status != recorded[-1]:
            status_record(ledger, version, status)
            recorded.append(status)
        on_poll(version, status, elapsed)
        if status.status in TERMINAL_KERNEL and log is not None:
            log.finish()
        return status.status in TERMINAL_KERNEL

    def stalled(status: KernelStatus, elapsed: float) -> Timeout:
        return Timeout(f"v{version} is still {status.status} after {elapsed:.0f} s; run lorakit status {version} "
                       "--wait again")

    status = poll_until(lambda: remote.kernel_status_get(ref, version), seen, Poll.of(remote.policy, timeout),
                        stalled, log)
    return version, status


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
    version, ref = version_target(project, remote, version)
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
    dest.parent.mkdir(parents=True, exist_ok=True)  # submissions/<slug>/ for another kernel
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


def _pulled_outputs_check(project: Project, version: int, written: list, status: KernelStatus,
                          warnings: list) -> tuple[Optional[dict], bool]:
    """(metrics.json, whether submission.csv may be submitted) of a pulled version; what is wrong with them
    goes into ``warnings``: the files are in place, so none of it is an error."""
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
    if "submission.csv" not in written:
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
        return status, [f"v{version} ended {status.status}: pulling what it left (see log.txt)"]
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


def metrics_columns(metrics: dict) -> dict:
    """The ledger cells metrics.json fills (pull and sync write them): those it says, each as the ledger keeps it."""
    fields = {"val_accuracy": finite_number(metrics.get("val_accuracy")), "run_minutes": run_minutes_of(metrics),
              "run_config_hash": str(metrics.get("config_hash") or ""),
              "trainable_params": metrics.get("trainable_params")}
    return cells({k: v for k, v in fields.items() if v not in (None, "")})


def pulled_fields(row: dict, ref: KernelRef, status: KernelStatus, metrics: Optional[dict]) -> dict:
    """The ledger columns a pull fills: when and how the run ended, and what its metrics.json says."""
    fields: dict = {"pulled_at": utc_now(), "status": status.status, "val_accuracy": "", "run_minutes": "",
                    "run_config_hash": ""}
    found = metrics_columns(metrics or {})
    if row.get("trainable_params"):  # what the push counted stays; a row the push did not write gets the run's
        found.pop("trainable_params", None)
    fields.update(found)
    if not row.get("kernel_ref"):
        fields["kernel_ref"] = str(ref)
    return fields


# -------------------------------------------------------------------------------------------- validate
def submission_validate(project: Optional[Project], path: Path, rows: Optional[int] = None) -> int:
    """The kernel's submission rules on ``path`` (the project's kernel, else the one lorakit ships); its rows:
    ``rows``, else what the metrics.json beside it says (rows_expected_of)."""
    if not rows:
        folder = Path(path).parent
        try:
            metrics = metrics_read(folder) if folder.is_dir() else None
        except UsageError:
            metrics = None  # a cut-short metrics.json must not stand in the way of a valid submission
    rows = int(rows) if rows else rows_expected_of(metrics)
    if rows < 1:
        raise UsageError("--rows must be positive")
    submission_check(project, Path(path), rows)
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
) -> Submission:
    """Poll submission ``ref`` until it is scored (or ``timeout`` seconds pass: Timeout); v<N>'s ledger row
    gets its status and scores."""
    poll = Poll.of(remote.policy, timeout)
    start = poll.timing.now()

    def read() -> Submission:
        try:
            return remote.submission_get(ref, project.competition)
        except RemoteError as exc:
            if exc.status != 404 or poll.timing.now() - start > timeout:  # a fresh one may not be readable yet
                raise
            return Submission(ref, "PENDING", None, None, "", "")

    def seen(sub: Submission, elapsed: float) -> bool:
        on_poll(sub, elapsed)
        if sub.status not in ("COMPLETE", "ERROR"):
            return False
        if version is not None:
            ledger_of(project).update(version, **submission_columns(sub))
        if sub.status == "ERROR":
            raise RunFailed(f"submission {ref} failed to score: {sub.error or 'no error message'}")
        return True

    def stalled(sub: Submission, elapsed: float) -> Timeout:
        return Timeout(f"submission {ref} is still {sub.status} after {elapsed:.0f} s; see lorakit scores later")

    return poll_until(read, seen, poll, stalled)


def submission_description(kernel: KernelRef, version: int, config_hash: str, token: str, text: str) -> str:
    """``v<N> owner/slug`` first (scores match submissions to versions by it), then the hash and the token,
    then the message."""
    head = f"v{version} {kernel}" + (f" {config_hash[:12]}" if config_hash else "") + f" {token}"
    return (head + (f": {text}" if text else ""))[:1000]


def description_version(description: str) -> tuple:
    """(version, kernel text or "") a submission's description names; (None, "") when it names none. Older
    descriptions name only the version: theirs is the metadata's kernel."""
    match = _DESCRIPTION_VERSION.match(description or "")
    return (int(match.group(1)), match.group(2) or "") if match else (None, "")


PREDICTED_ON = {"smoke": "synthetic smoke data", "competition": "the competition's test file"}


def predicted_on(project: Project, version: int, row: dict, kernel: Optional[KernelRef] = None) -> tuple:
    """What v<N>'s run predicted on, as its pulled metrics.json says (predicted_on_of)."""
    try:
        metrics = metrics_read(project.version_dir(version, kernel)) or {}
    except UsageError:
        metrics = {}
    return predicted_on_of(metrics, row)


def predicted_on_of(metrics: dict, row: dict) -> tuple:
    """(kind, words) from metrics.json's predicted_on; for a run from before it was recorded, ("smoke", ...)
    when its config or the ledger row's overrides say smoke=true, else (None, why)."""
    seen = metrics.get("predicted_on")
    if isinstance(seen, dict) and seen.get("kind"):
        kind = str(seen["kind"])
        where = "" if kind == "smoke" or not seen.get("path") else f" {seen['path']}"
        return kind, PREDICTED_ON.get(kind, "another test file") + where
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    if config.get("smoke") is True or (overrides_of(row) or {}).get("smoke") is True:
        return "smoke", PREDICTED_ON["smoke"] + " (smoke=true)"
    return None, "its metrics.json does not say (written before lorakit recorded it)"


def real_run_check(project: Project, version: int, row: dict, allow_smoke: bool) -> list:
    """Refuse (FlagNeeded) to submit a run that did not predict the competition's own test file, unless
    ``allow_smoke``; the notes to show otherwise."""
    kind, words = predicted_on(project, version, row)
    if kind == "competition":
        return []
    if kind is None:
        return [f"cannot tell what v{version} predicted on ({words}); submitting it"]
    if allow_smoke:
        return [f"v{version} predicted on {words}, not the competition's test file: submitted as --allow-smoke asks"]
    raise FlagNeeded(f"v{version} predicted on {words}, not the competition's test file: nothing submitted "
                     "(--allow-smoke submits it anyway, to exercise the loop against a stand-in)")


def submission_columns(sub: Submission) -> dict:
    """The ledger's cells of a submission as Kaggle shows it (every command that records one writes these)."""
    return cells({"submission_ref": sub.ref, "submission_status": sub.status, "public_score": sub.public_score,
                  "private_score": sub.private_score})


def _submission_recorded(ledger: Ledger, version: int, sub: Submission, token: str) -> None:
    """Make ``sub`` v<N>'s submission: the previous one's columns are replaced only now, once it is known."""
    ledger.update(version, **submission_columns(sub), submission_token=token, submitted_at=sub.date or utc_now(),
                  pending_token="", pending_status="")


def submission_pending_settle(project: Project, remote: Remote, ledger: Ledger, version: int, row: dict):
    """v<N>'s submission recorded before sending (SENDING) or sent with its reply lost (UNCONFIRMED): the
    submission its token finds among mine (then recorded), else None (recorded as NOT_SUBMITTED)."""
    token = row.get("pending_token", "")
    found = next((s for s in remote.submissions_list(project.competition) if token and token in s.description), None)
    if found is None:
        ledger.update(version, pending_status=NOT_SUBMITTED)
        return None
    _submission_recorded(ledger, version, found, token)
    return found


def submission_create(project: Project, remote: Remote, version, message: Optional[str] = None,
                      allow_smoke: bool = False) -> SubmitResult:
    version = version_parse(version)
    text_checked(message or "", "-m")
    folder = project.version_dir(version)
    path = folder / "submission.csv"
    if not path.is_file():
        raise UsageError(f"{path.relative_to(project.root)} does not exist; run lorakit pull {version} first")
    submission_validate(project, path)  # the kernel's rules, before any network call
    ledger = ledger_of(project)
    ledger.check_writable()
    recorded = ledger.row(version) or {}
    notes = real_run_check(project, version, recorded, allow_smoke)
    if recorded.get("submission_status") == UNCONFIRMED:  # written by older lorakit
        raise UsageError(
            f"v{version}'s last submission is {UNCONFIRMED}: run lorakit scores to find out whether it reached "
            "Kaggle before submitting again"
        )
    kernel = kernel_ref_resolve(project, remote)
    ledger = ledger_of(project, kernel)
    row = ledger.row(version) or {}
    if row.get("pending_status") in (SENDING, UNCONFIRMED):
        earlier = submission_pending_settle(project, remote, ledger, version, row)
        if earlier is not None:
            notes.append(f"v{version}'s earlier submission (its reply lost) reached Kaggle as {earlier.ref}: "
                         "recorded, not sent again")
            return SubmitResult(version, earlier.ref, submissions_left(project, remote, notes), tuple(notes))
    token = token_new()
    description = submission_description(kernel, version, row.get("config_hash", ""), token,
                                         message or row.get("message") or "")
    limits = remote.submission_limits_get(project.competition)
    if int(getattr(limits, "num_allowed_now", 0) or 0) <= 0:
        used = int(getattr(limits, "num_today", 0) or 0)
        raise UsageError(
            f"no submissions left today for {project.competition} ({used} used); try again after the daily reset "
            f"(if you have not joined, accept the rules at https://www.kaggle.com/competitions/{project.competition}/rules)"
        )
    ref, recovered = _submission_send(project, remote, ledger, Outgoing(version, path, description, token))
    if recovered:
        notes.append(f"Kaggle's reply to the submission was lost, but it went through as {ref}: not sent again")
    return SubmitResult(version, ref, submissions_left(project, remote, notes), tuple(notes))


@dataclass(frozen=True)
class Outgoing:
    """A submission about to be sent: v<N>'s file, its description and the token the description holds."""

    version: int
    path: Path
    description: str
    token: str


def _submission_send(project: Project, remote: Remote, ledger: Ledger, outgoing: Outgoing) -> tuple:
    """Record the submission as pending (SENDING) before it leaves, send it, then record it; (ref, recovered).
    The previous submission's columns stay until the new one is known."""
    version, path, description, token = outgoing.version, outgoing.path, outgoing.description, outgoing.token
    ledger.update(version, pending_token=token, pending_status=SENDING)  # or nothing is sent
    try:
        ref, recovered = remote.submission_create(path, description, project.competition, token)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        ledger.update(version, pending_status=UNCONFIRMED)
        advice = f"recorded v{version}'s submission as {UNCONFIRMED}: run lorakit scores to find out before submitting again"
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted while submitting; {advice}", version) from None
        raise Unconfirmed(f"{exc}; {advice}") from None
    except RemoteError as exc:
        if exc.status is not None and 400 <= exc.status < 500:  # refused: nothing was submitted
            ledger.update(version, pending_token="", pending_status="")
        raise
    try:
        _submission_recorded(ledger, version, Submission(ref, "PENDING", None, None, description, utc_now()), token)
    except (OSError, LedgerError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"submitted v{version} as submission {ref}, but the ledger could not be updated ({reason}): "
                          "lorakit scores records it by its token; do not submit it again") from None
    return ref, recovered


def submissions_left(project: Project, remote: Remote, notes: list) -> Optional[int]:
    try:
        return int(getattr(remote.submission_limits_get(project.competition), "num_allowed_now", 0) or 0)
    except RemoteError as exc:
        notes.append(f"could not read the submissions left today: {exc}")
        return None


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


def _nothing(*_args) -> None:
    return None


@dataclass(frozen=True)
class RunOptions:
    """What `lorakit run` was asked: the push, then whether to submit, and how long to wait for each end."""

    push: PushOptions
    submit: bool = False
    timeout: float = 3600.0  # for the run
    score_timeout: float = 1800.0  # for the score
    allow_smoke: bool = False

    def __post_init__(self):
        if self.push.no_run:
            raise UsageError("lorakit run waits for the run it pushes; to save without running: lorakit push --no-run")
        for value, name in ((self.timeout, "--timeout"), (self.score_timeout, "--score-timeout")):
            if not value > 0:
                raise UsageError(f"{name} must be a positive number of seconds")


@dataclass(frozen=True)
class RunShow:
    """What the caller of run_pipeline hears as the steps go (the CLI prints it); nothing by default."""

    warn: Callable[[str], None] = _nothing  # kernel_push's warn
    pushed: Callable[[PushResult], None] = _nothing
    on_poll: Callable[[int, KernelStatus, float], None] = _nothing
    on_log: Optional[Callable[[str], None]] = None  # follow the run's log (kernel_status_wait)
    ran: Callable[[int, KernelStatus], None] = _nothing  # the run ended, failed or not
    on_wait: Callable[[str], None] = _nothing  # another pull of the version holds its lock
    pulled: Callable[[PullResult], None] = _nothing
    submitted: Callable[[SubmitResult], None] = _nothing
    on_score_poll: Callable[[Submission, float], None] = _nothing


@dataclass(frozen=True)
class RunResult:
    pushed: PushResult
    pulled: Optional[PullResult] = None  # None in a dry run
    submitted: Optional[SubmitResult] = None
    score: Optional[Submission] = None  # the scored submission (with --submit)


@dataclass
class RunAt:
    """Where a run pipeline is: its step (one of RUN_STEPS) and the version pushed (None before)."""

    step: str = "push"
    version: Optional[int] = None


def run_pipeline(project: Project, remote: Optional[Remote], options: RunOptions, show: RunShow = RunShow()) -> RunResult:
    """Push, wait for the run, pull its outputs and, with ``options.submit``, submit and wait for the score.

    The ledger is up to date at every step; when Ctrl-C or a Kaggle error stops it, the message says which
    commands finish the job from there (run_resume).
    """
    at = RunAt()
    try:
        return _run_steps(project, remote, options, show, at)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted {RUN_STEPS[at.step]}; the ledger is up to date; "
                          f"{run_resume(at.step, at.version, options.submit)}") from None
    except Interrupted as exc:
        if at.step == "push" and exc.version is not None:  # the push was recorded UNCONFIRMED
            raise Interrupted(f"{exc}; {run_resume('wait', exc.version, options.submit)}") from None
        raise
    except RemoteError as exc:
        if at.version is None:
            raise
        raise RemoteError(f"{exc}; {run_resume(at.step, at.version, options.submit)}", status=exc.status) from None


def _run_steps(project: Project, remote: Optional[Remote], options: RunOptions, show: RunShow, at: RunAt) -> RunResult:
    """run_pipeline's steps, each recorded in ``at`` as it starts."""
    push = replace(options.push, for_submission=options.submit and not options.allow_smoke)
    pushed = kernel_push(project, remote, push, show.warn)
    show.pushed(pushed)
    if options.push.dry_run:
        return RunResult(pushed)
    at.step, at.version = "wait", pushed.version
    version, status = kernel_status_wait(project, remote, pushed.version, options.timeout, show.on_poll, show.on_log)
    show.ran(version, status)
    kernel_failure_raise(version, status)
    at.step = "pull"
    pulled = kernel_output_pull(project, remote, version, on_wait=show.on_wait)
    show.pulled(pulled)
    if not options.submit:
        return RunResult(pushed, pulled)
    at.step = "submit"
    submitted = submission_create(project, remote, version, None, options.allow_smoke)
    at.step = "score"  # submitted and recorded: only the score is left to read
    show.submitted(submitted)
    scored = submission_wait(project, remote, submitted.ref, submitted.version, options.score_timeout,
                             show.on_score_poll)
    return RunResult(pushed, pulled, submitted, scored)


# ---------------------------------------------------------------------------------------------- scores
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
class Scores:
    rows: tuple
    best_public: Optional[ScoreRow]
    best_validation: Optional[dict]  # ledger row
    unrecorded: tuple = ()  # versions named by submissions but absent from the ledger
    not_submitted: tuple = ()  # versions whose unconfirmed submission turned out never to have reached Kaggle
    not_candidates: tuple = ()  # (version, kernel, what it predicted on): runs that are not real runs

    def as_json(self) -> dict:
        return {
            "submissions": [
                {**r.submission.as_json(), "version": r.version, "kernel": r.kernel or None, "gap": r.gap,
                 "val_accuracy": r.val_accuracy, "message": r.message,
                 "overrides": json_loads_safe(r.overrides) if r.overrides else None}
                for r in self.rows
            ],
            "best_public": None if self.best_public is None else self.best_public.version,
            "best_validation": None if self.best_validation is None else int(self.best_validation["version"]),
            "unrecorded": list(self.unrecorded),
            "not_submitted": list(self.not_submitted),
            "not_candidates": [{"version": v, "kernel": k, "predicted_on": w} for v, k, w in self.not_candidates],
        }


def submission_key(sub: Submission, rows: dict, home: str) -> Optional[tuple]:
    """The (kernel, version) a submission belongs to: by its recorded ref, by a token in its description,
    else by the version (and kernel) its description names."""
    for key, row in rows.items():
        tokens = [t for t in (row.get("submission_token"), row.get("pending_token")) if t]
        if row.get("submission_ref") == str(sub.ref) or any(t in sub.description for t in tokens):
            return key
    version, kernel = description_version(sub.description)
    if version is None:
        return None
    kernel = kernel or home
    return next((k for k in rows if k[1] == version and kernel_same(k[0], kernel)), (kernel, version))


def submission_preferred(row: dict, sub: Submission, current: Optional[Submission]) -> bool:
    """Whether ``sub`` is the version's submission rather than ``current``: the pending one once it shows
    up, else the recorded one (by ref, else token), else the newest."""
    pending = row.get("pending_token")
    if pending and pending in sub.description:
        return True
    if pending and current is not None and pending in current.description:
        return False
    if row.get("submission_ref"):
        return str(sub.ref) == row["submission_ref"]
    if row.get("submission_token"):
        return row["submission_token"] in sub.description
    return current is None or sub.ref > current.ref


def _scores_record(ledger: Ledger, chosen: dict, lost: set) -> None:
    """Write each version's chosen submission, and NOT_SUBMITTED for the unconfirmed ones never seen."""
    with ledger.transaction() as records:
        for record in records:
            key = (record["kernel_ref"], int(record["version"])) if record["version"] else None
            if key in lost:  # an older lorakit recorded it in submission_status
                record["pending_status" if record.get("pending_token") else "submission_status"] = NOT_SUBMITTED
            sub = chosen.get(key)
            if sub is None:
                continue
            if record.get("pending_token") and record["pending_token"] in sub.description:
                record.update(submission_token=record["pending_token"], submitted_at=sub.date or utc_now(),
                              pending_token="", pending_status="")
            record.update(submission_columns(sub))


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
    unsettled = {k for k, r in rows.items() if r.get("pending_status") in (SENDING, UNCONFIRMED)
                 or (r.get("submission_status") == UNCONFIRMED and not r.get("submission_ref"))}
    lost = {k for k in unsettled if k not in chosen or not _settles(rows[k], chosen[k])}
    if lost or any(k in rows for k in chosen):
        _scores_record(ledger, {k: s for k, s in chosen.items() if k in rows}, lost)
    result.sort(key=lambda r: (r.submission.public_score is None, -(r.submission.public_score or 0.0), -r.submission.ref))
    seen_on = {k: predicted_on(project, k[1], r, KernelRef.parse_or_none(k[0])) for k, r in rows.items()}
    real = {k for k, (kind, _words) in seen_on.items() if kind in (None, "competition")}
    best_public = next((r for r in result if r.submission.public_score is not None and r.version is not None
                        and (r.kernel, r.version) in real), None)
    with_val = [r for r in ledger.all_rows() if r["version"] and finite_number(r.get("val_accuracy")) is not None
                and (r["kernel_ref"], int(r["version"])) in real]
    best_val = max(with_val, key=lambda r: (finite_number(r["val_accuracy"]), int(r["version"]))) if with_val else None
    shown = {k for k in chosen} | {k for k in rows if finite_number(rows[k].get("val_accuracy")) is not None}
    not_candidates = tuple((k[1], k[0], seen_on[k][1]) for k in sorted(shown) if k in rows and k not in real)
    unrecorded = tuple(sorted(k[1] for k in chosen if k not in rows))
    return Scores(tuple(result), best_public, best_val, unrecorded, tuple(sorted(k[1] for k in lost)), not_candidates)


def _settles(row: dict, sub: Submission) -> bool:
    """Whether ``sub`` is the unconfirmed submission of ``row`` (its pending token, or an older lorakit's)."""
    token = row.get("pending_token") or row.get("submission_token") or ""
    return bool(token) and token in sub.description


def output_path_check(path, flag: str, folder: bool = False) -> Path:
    """``path`` when ``flag`` PATH can be written (a file, or with ``folder`` a folder to create or fill);
    else ArgumentError naming it. Called before any network call, so that nothing is fetched in vain."""
    path = Path(path)
    target = path if folder else path.parent
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    problem = ""
    if path.exists() and path.is_dir() != folder:
        problem = "is a folder" if path.is_dir() else "is not a folder"
    elif not existing.is_dir():
        problem = f"{existing} is not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            problem = f"{existing} is not writable ({exc.strerror or type(exc).__name__})"
    if problem:
        raise ArgumentError(f"{flag} {path}: {problem}")
    return path


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

    rows = remote.leaderboard_get(project.competition, pages=max(1, (top + 99) // 100) + 9, enough=enough)
    ranked = [
        LeaderboardRow(i + 1, tid, name, score, date, name in mine_names)
        for i, (tid, name, score, date) in enumerate(rows)
    ]
    shown = ranked[:top]
    me = next((r for r in ranked if r.mine), None)
    return shown, me, zip_path


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
    used, total = gpu_hours(response)
    refresh = getattr(response, "quota_refresh_time", None)
    refresh_text = refresh.isoformat(timespec="minutes") if hasattr(refresh, "isoformat") else ""
    minutes = tuple(
        (int(r["version"]), float(r["run_minutes"])) for r in rows if finite_number(r.get("run_minutes")) is not None
    )
    return Quota(used, total, refresh_text, minutes)
