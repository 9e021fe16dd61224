"""`lorakit push`: check, render the kernel with its overrides and push record, and push a new version,
recorded before it is sent; `--predict-from N` carries version N's adapter as a private dataset.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from lorakit.check import config_check
from lorakit.common import (
    UNCONFIRMED, accelerator_asked, kernel_ref_resolve, ledger_of, overrides_text, text_checked, token_new, utc_now,
    version_parse,
)
from lorakit.console import JSON, SETS, Output, command, flag, note, project_of, remote_new, warn
from lorakit.errors import (
    ArgumentError, FlagNeeded, LedgerError, NotFound, RemoteError, Timeout, Unconfirmed, UsageError,
)
from lorakit.inflight import (
    push_claim, push_duplicate_check, pushes_settle, refused_by_kaggle, send_fields, send_over, sending, unsure_error,
)
from lorakit.kernel import Effective, adapter_digest, script_render
from lorakit.ledger import SENDING, Ledger
from lorakit.processes import temp_tag
from lorakit.preflight import (
    CompetitionState, competition_preflight, kaggle_refusal, sources_preflight, title_for, title_preflight,
)
from lorakit.project import (
    METADATA_FILE, DatasetRef, KernelRef, Project, adapter_dataset_ref, git_state, slugify_title,
)
from lorakit.quota import gpu_hours_left, quota_weigh, run_estimate
from lorakit.remote import PushReply, PushSettings, Remote
from lorakit.retry import Poll, poll_until


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
    again: bool = False  # push even when a push of the same config_hash may have reached Kaggle
    for_submission: bool = False  # set by run_pipeline for run --submit: a smoke config is refused before pushing
    sweep_id: str = ""  # the sweep this push is an arm of (lorakit sweep), written into its ledger row
    submit_flag: str = ""  # the flag of a push meant to be submitted (run --submit): a closed competition refuses it
    over_quota: bool = False  # push even when the run's estimate exceeds the GPU hours left
    session_timeout_minutes: Optional[float] = None  # when Kaggle stops the session (default: time limit + margin)
    sweep_record: str = ""  # that sweep's definition (JSON) for the push record: sync restores it in another clone


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
    session_timeout_s: Optional[int] = None  # the session_timeout_seconds sent (or, in a dry run, to be sent)

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
            "session_timeout_s": self.session_timeout_s,
        }


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
    meta["title"] = title_sent(project, ref)
    meta["code_file"] = script_name
    sources = list(meta.get("dataset_sources") or [])
    sources += [source for source in dataset_sources if source not in sources]
    meta["dataset_sources"] = sources
    if accelerator:
        meta["machine_shape"] = accelerator
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def title_sent(project: Project, ref: KernelRef) -> str:
    """The title the build copy sends: the metadata's; for --kernel naming another kernel, one whose slug is that
    kernel's when the metadata's makes another (Kaggle names a kernel it creates by its title)."""
    title = str(project.metadata.get("title") or "")
    home = project.home or project.kernel
    if ref.slug != home.slug and slugify_title(title) != ref.slug.lower():
        return title_for(ref.slug)
    return title


def adapter_source_of(project: Project, version) -> AdapterSource:
    """Version ``version``'s pulled adapter (offline): its folder, digest and the dataset that will carry it."""
    version = version_parse(version)
    folder = project.version_dir(version) / "adapter"
    shown = folder.relative_to(project.root)
    if not (folder / "kit.json").is_file():
        raise NotFound(f"{shown}/kit.json does not exist: pull v{version} first (lorakit pull {version})")
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
        raise ArgumentError(f"--build-dir {build_dir} would overwrite {project.script_path.relative_to(project.root)} "
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
    def session_timeout_s(self) -> int:
        """session_timeout_seconds: Kaggle stops the run there (session_timeout_of)."""
        return self.record["session_timeout_s"]

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
        return PushResult(None, ref, ref.url, plan.build_dir, plan.effective, plan.asked, plan.adapter, tuple(notes),
                          session_timeout_s=plan.session_timeout_s)
    if remote is None:  # pragma: no cover - the CLI always passes one
        raise UsageError("push needs a Kaggle connection")
    ref = kernel_ref_resolve(project, remote, notes)
    target = PushTarget(project, remote, ref, ledger_of(project, ref))
    plan = push_preflight(target, plan, options, warn, notes)
    version, url, status = push_send(target, plan, options, notes)
    return PushResult(version, ref, url, plan.build_dir, plan.effective, plan.asked, plan.adapter, tuple(notes), status,
                      plan.session_timeout_s)


def push_options_check(project: Project, options: PushOptions) -> Optional[Path]:
    """The message and --accelerator usable, the ledger writable; the checked --build-dir, if any."""
    if not options.message or not options.message.strip():
        raise ArgumentError("push needs a message: -m MSG")
    text_checked(options.message, "-m")
    accelerator = options.accelerator
    if accelerator is not None and (not accelerator.strip() or re.search(r"\s", accelerator)):
        raise ArgumentError(f"--accelerator must be a machine shape such as NvidiaTeslaT4, got {accelerator!r}")
    minutes = options.session_timeout_minutes
    if minutes is not None and not 0 < minutes < float("inf"):
        raise ArgumentError(f"--session-timeout-minutes must be a positive number of minutes, got {minutes:g}")
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
    warnings = [*report.warnings, *([effective.budget_warning] if effective.budget_warning else [])]
    timeout = session_timeout_of(effective.config, accelerator_asked(project.metadata, options.accelerator),
                                 options.session_timeout_minutes, warnings)
    record = push_record_of(project, effective, options, timeout)
    rendered = script_render(project, effective, record["push_token"], record)  # once, before any network call
    return PushPlan(effective, adapter, record, rendered, build_dir, tuple(warnings))


SESSION_MARGIN_MINUTES = 30.0  # after training stops at time_limit_minutes: the adapter saved, predictions written
SESSION_MAX_MINUTES = 12 * 60.0  # Kaggle's longest GPU (and CPU) session
TPU_SESSION_MAX_MINUTES = 9 * 60.0  # ... and TPU session


def session_timeout_of(config, asked: str, minutes: Optional[float], notes: list) -> int:
    """The session_timeout_seconds of a push: ``minutes`` (--session-timeout-minutes), else the run's
    time_limit_minutes plus SESSION_MARGIN_MINUTES; never past Kaggle's session maximum (a note says so)."""
    most = TPU_SESSION_MAX_MINUTES if asked.lower().startswith("tpu") else SESSION_MAX_MINUTES
    wanted = minutes if minutes is not None else float(config.time_limit_minutes) + SESSION_MARGIN_MINUTES
    if wanted > most:
        notes.append(f"a session timeout of {wanted:g} min is past Kaggle's {most / 60:g} h session maximum: "
                     f"{most:g} min sent instead")
        wanted = most
    return int(round(wanted * 60))


def push_record_of(project: Project, effective: Effective, options: PushOptions, session_timeout_s: int) -> dict:
    """What only the pushing machine knows of a push (its token, time, message, git state, the accelerator
    asked, the sweep it is an arm of and that sweep's definition, the session timeout sent) and the config_hash
    and count it was pushed with: written into the script's push record block, which the run copies into
    metrics.json and `lorakit sync` reads back, and (but the sweep's definition) into the ledger row."""
    commit, dirty = git_state(project.root)
    return dict(push_token=token_new(), pushed_at=utc_now(), message=options.message, git_commit=commit,
                git_dirty=dirty, accelerator=accelerator_asked(project.metadata, options.accelerator),
                config_hash=effective.config_hash, trainable_params=effective.trainable_params,
                sweep_id=options.sweep_id, session_timeout_s=session_timeout_s,
                **({SWEEP_RECORD: options.sweep_record} if options.sweep_record else {}))


SWEEP_RECORD = "sweep"  # the push record's key of a sweep's definition: read by sync, no ledger column


def push_preflight(target: PushTarget, plan: PushPlan, options: PushOptions, warn: Callable[[str], None],
                   notes: list) -> PushPlan:
    """Before sending: settle the pushes left unsettled, refuse a config whose push may have reached Kaggle
    (unless --again), ask Kaggle what it would refuse (kaggle_preflight), and upload the adapter, looked up once
    ready; the plan with the adapter as uploaded."""
    notes += pushes_settle(target.project, target.remote, target.ref).notes()
    if not options.again:
        push_duplicate_check([*target.ledger.provisional(), *target.ledger.rows()], plan.effective.config_hash)
    competition = kaggle_preflight(target, plan, options, warn, notes)
    if plan.adapter is None:
        return plan
    plan = replace(plan, adapter=adapter_dataset_ensure(target.remote, plan.adapter, target.ref, notes))
    sources_preflight(target.remote, {"dataset_sources": plan.sources}, competition, notes)
    return plan


def kaggle_preflight(target: PushTarget, plan: PushPlan, options: PushOptions, warn: Callable[[str], None],
                     notes: list) -> CompetitionState:
    """What Kaggle would refuse, asked before anything is sent: the competition (rules, deadline), the title of a
    kernel not made yet, every source of the metadata; then the run's estimate against the GPU hours left
    (``warn`` hears an --over-quota push). What it read of the competition."""
    remote, project = target.remote, target.project
    competition = competition_preflight(remote, project.competition, options.submit_flag, notes)
    title_preflight(remote, title_sent(project, target.ref), target.ref)
    sources_preflight(remote, project.metadata, competition, notes)
    if plan.asked == "none":
        return competition
    estimate = run_estimate(target.ledger.rows(), plan.asked, plan.effective.config.time_limit_minutes,
                            predict_only=plan.adapter is not None)
    left, why = gpu_hours_left(lambda: remote, plan.asked)
    if why:
        notes.append(f"{why}; pushed without weighing the run against it")
    overridden = quota_weigh(left, estimate.minutes, f"the run ({estimate.minutes:.0f} min: {estimate.source})",
                             options.over_quota)
    if overridden:
        warn(overridden)
    return competition


def push_send(target: PushTarget, plan: PushPlan, options: PushOptions, notes: list) -> tuple:
    """Write the build folder (a temporary one unless --build-dir), then record and send the push."""
    folder = plan.build_dir or Path(tempfile.mkdtemp(prefix=f"lorakit-build-{temp_tag()}"))
    try:
        build_write(target.project, plan.rendered, target.ref, folder, options.accelerator, plan.sources)
        with sending(plan.token):
            return _push_send(target, folder, plan, options, notes)
    finally:
        if plan.build_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _build_render(project: Project, plan: PushPlan, ref: KernelRef, accelerator: Optional[str]) -> None:
    """A dry run's build folder: kept with --build-dir, else rendered in a temporary folder and removed."""
    if plan.build_dir is not None:
        build_write(project, plan.rendered, ref, plan.build_dir, accelerator, plan.sources)
        return
    with tempfile.TemporaryDirectory(prefix=f"lorakit-build-{temp_tag()}") as folder:
        build_write(project, plan.rendered, ref, Path(folder), accelerator, plan.sources)


def _push_fields(plan: PushPlan) -> dict:
    """The ledger columns a push writes when it is recorded: its push record, overrides and adapter."""
    adapter = plan.adapter
    return dict(
        {**{k: v for k, v in plan.record.items() if k != SWEEP_RECORD},
         "git_dirty": "" if plan.record["git_dirty"] is None else plan.record["git_dirty"]},
        overrides=overrides_text(plan.effective.overrides),
        predict_from=adapter.version if adapter else "",
        adapter_dataset=str(adapter.dataset) if adapter else "",
        adapter_sha256=adapter.sha256 if adapter else "",
    )


def _push_send(target: PushTarget, folder: Path, plan: PushPlan, options: PushOptions, notes: list) -> tuple:
    """Record the push (SENDING, naming this process) before it leaves, send it, then number its row;
    (version, url, status)."""
    remote, ledger, ref, token = target.remote, target.ledger, target.ref, plan.token
    before = remote.kernel_latest_get(ref)
    after = before.version
    fields = {**_push_fields(plan), **send_fields(remote.policy)}
    push_claim(ledger, token, options.again, sent_after=after, kernel_url=ref.url, **fields)  # or nothing is sent
    try:
        settings = PushSettings(options.accelerator, options.no_run, plan.session_timeout_s)
        reply, recovered = remote.kernel_push(folder, settings, ref, token, after)
    except (Unconfirmed, KeyboardInterrupt) as exc:
        version = after + 1  # what Kaggle numbers it if it went through
        _push_record(target, token, version, notes, status=UNCONFIRMED, **send_over())
        advice = f"recorded as v{version} {UNCONFIRMED}: run lorakit status {version} to find out before pushing again"
        raise unsure_error(exc, "pushing", advice, version) from None
    except RemoteError as exc:
        if refused_by_kaggle(exc):
            ledger.drop_provisional(token)
            raise kaggle_refusal(f"the push of {ref}", exc.detail, exc.status, target.project.competition) or exc
        raise
    url = reply.url or ref.url
    if reply.error:
        ledger.drop_provisional(token)
        raise (kaggle_refusal(f"the push of {ref}", reply.error, None, target.project.competition)
               or RemoteError(f"Kaggle refused the push of {ref}: {reply.error}"))
    if not reply.version:  # the row stays SENDING: the next command finds the version by the token
        raise RemoteError(f"Kaggle accepted the push of {ref} but returned no version number; see {url}")
    if recovered:
        notes.append(f"Kaggle's reply to the push was lost, but it went through as v{reply.version}: not sent again")
    status = "NEW_SCRIPT" if options.no_run else "QUEUED"
    return _push_numbered(target, token, reply, before.kernel_id, notes, status)


def reply_kernel(reply: PushReply) -> Optional[KernelRef]:
    """The kernel a SaveKernel reply says it saved to (its ref, else its url: ".../code/owner/slug"); None when
    it names none."""
    for text in (reply.ref, reply.url):
        path = urlsplit(text).path if "://" in text else text
        match = re.search(r"(?:^|/)([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/?$", path)
        if match:
            return KernelRef(*match.groups())
    return None


def _push_numbered(target: PushTarget, token: str, reply: PushReply, kernel_id: int, notes: list,
                   status: str) -> tuple:
    """Number the push's row from Kaggle's whole reply: under the kernel it names (the ledger records the real
    one) and marked with what it refused (push_problem); a RemoteError naming the fix when there is either.
    ``kernel_id`` is the meant kernel's id before the push (0: it did not exist). (version, url, status)."""
    saved, meant = reply_kernel(reply), target.ref
    problems = [f"{name} {', '.join(entries)}" for name, entries in reply.invalid]
    other = saved is not None and (saved.owner.lower(), saved.slug.lower()) != (meant.owner.lower(), meant.slug.lower())
    if other:
        problems.append(f"saved to {saved}, not {meant}")
        target = replace(target, ref=saved, ledger=ledger_of(target.project, saved))
    elif kernel_id and reply.kernel_id and reply.kernel_id != kernel_id:
        problems.append(f"saved to the kernel of id {reply.kernel_id}, not {meant}'s {kernel_id}")
    url = reply.url or target.ref.url
    _push_record(target, token, reply.version, notes, kernel_url=url, status=status, kernel_ref=str(target.ref),
                 push_problem="; ".join(problems))
    if other:
        title = title_sent(target.project, meant)
        raise RemoteError(f"Kaggle saved this push as {saved} v{reply.version}, not {meant}: the title {title!r} and "
                          f"the slug {meant.slug!r} disagree, so Kaggle made a new kernel; recorded under {saved} "
                          f"(lorakit status {reply.version} --kernel {saved}); delete it with: kaggle kernels delete "
                          f"{saved}, and set the title in kernel-metadata.json to "
                          f"{title_for(meant.slug)!r}")
    if problems:
        raise RemoteError(f"Kaggle made v{reply.version} of {meant} but refused {'; '.join(problems)}: recorded and "
                          f"marked (lorakit status {reply.version}); the run cannot use what was refused: fix "
                          "kernel-metadata.json and push again")
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


# ------------------------------------------------------------------------------------- the command line
PUSH_FLAGS = (
    flag("-m", "--message", required=True, help="what this version tries (kept in the ledger)"),
    SETS,
    flag("--accelerator", metavar="SHAPE", help="machine shape, e.g. NvidiaTeslaT4 (overrides the metadata)"),
    flag("--no-run", action="store_true", help="save the version without running it (quick save; push only)"),
    flag("--predict-from", metavar="N", type=int,
         help="predict only, with version N's pulled adapter (submissions/vN/adapter, uploaded as a private "
              "dataset and pinned by its sha256)"),
    flag("--build-dir", metavar="DIR",
         help="render the build folder here and keep it (default: a temporary folder, removed after the push)"),
    flag("--dry-run", action="store_true",
         help="check and render the build folder, push nothing (the folder is kept only with --build-dir)"),
    flag("--again", action="store_true",
         help="push even when a push of the same config_hash may have reached Kaggle (in flight, not settled yet, "
              "queued, running or COMPLETE)"),
    flag("--over-quota", action="store_true",
         help="push even when the run's estimate exceeds the GPU hours left this week (lorakit quota)"),
    flag("--session-timeout-minutes", type=float, metavar="M",
         help="Kaggle stops the run's session after M minutes (default: time_limit_minutes + 30, at most Kaggle's "
              "12 h): a backstop on Kaggle's side, unlike run's --timeout, which only stops lorakit waiting"),
)


def push_options_of(args) -> PushOptions:
    """The PushOptions of push's (and run's) command line."""
    return PushOptions(args.message, tuple(args.sets), args.accelerator, args.no_run, args.predict_from,
                       args.build_dir, args.dry_run, args.again, over_quota=args.over_quota,
                       session_timeout_minutes=args.session_timeout_minutes)


def push_show(out: Output, project, result, hints: bool) -> None:
    e = result.effective
    out.progress(f"check: {e.trainable_params:,} trainable parameters (within budget {e.budget:,}), "
                 f"config_hash {e.config_hash[:12]}")
    if result.session_timeout_s:
        out.progress(f"session timeout on Kaggle: {result.session_timeout_s / 60:g} min")
    if result.adapter is not None:
        a = result.adapter
        upload = f" ({a.upload})" if a.upload else ""
        out.progress(f"predict from v{a.version}: adapter sha256 {a.sha256[:12]} in dataset {a.dataset}{upload}")
    for line in result.notes:
        note(line)
    if result.version is None:
        kept = f"build folder {result.build_dir}" if result.build_dir else "rendered and checked (--build-dir keeps it)"
        out.progress(f"dry run: {kept} (nothing pushed)")
        return
    if result.build_dir is not None:
        out.progress(f"build folder {result.build_dir}")
    verb = "saved (not run)" if result.status == "NEW_SCRIPT" else "pushed"
    out.progress(f"{verb} v{result.version} of {result.kernel}: {result.url}")
    out.progress(f"ledger: {project.ledger_path.relative_to(project.root)} row v{result.version}")
    if hints:
        out.progress(f"next: lorakit status {result.version} --wait")


@command("push", "check, render the kernel with its overrides, push a new version and record it", *PUSH_FLAGS,
         JSON)
def cmd_push(args) -> int:
    project = project_of(args)
    options = push_options_of(args)
    result = kernel_push(project, None if options.dry_run else remote_new(), options, warn)
    push_show(args.out, project, result, hints=not options.no_run)
    args.out.document(result.as_json())
    return 0
