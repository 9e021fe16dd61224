"""A sweep's definition: its arms (the cartesian product of --grid, the first rows of `lorakit plan`, the
override objects of --config FILE; each with its seeds), every one checked by the push's own offline checks
before anything is pushed, and its record, submissions/sweeps/<id>.json, written before the first push.

An arm whose config this kernel already ran to COMPLETE (or is running now) is taken from the ledger: it
``reuses`` that version, ranked with the others and never pushed again (--again pushes it all the same). The
record also travels in every arm's push record, so that `lorakit sync` restores it in another clone.

--grid KEY=V1,V2 splits its values at commas; a value that holds commas (lora_targets=query,value) is given
with | between the values instead: --grid 'lora_targets=query,value|query,key,value,dense'.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from lorakit.common import NOT_PUSHED, ledger_of, utc_now
from lorakit.errors import ArgumentError, FlagNeeded, NotFound, UsageError
from lorakit.ledger import file_write_atomic
from lorakit.project import Project
from lorakit.kernel import config_list_keys
from lorakit.push import PushOptions, push_plan
from lorakit.transport import json_loads_safe

SWEEP_ID = re.compile(r"sw-[0-9a-f]{6}")


@dataclass(frozen=True)
class Arm:
    """One push of a sweep: an arm's own settings, with --seeds one of its seeds; counted by sweep_check."""

    name: str  # a1, a2, ... in the order the arms were given
    sets: tuple  # the arm's own KEY=VALUE settings (grid, plan row, config file)
    seed: Optional[int] = None  # --seeds: this push's seed; None: the config's own
    config_hash: str = ""
    trainable_params: int = 0
    time_limit_minutes: float = 0.0  # what a run may take at most: its estimate while none ran (lorakit.quota)
    reuses: Optional[int] = None  # the version that already ran this config (taken from the ledger, not pushed)

    @property
    def label(self) -> str:
        return self.name if self.seed is None else f"{self.name} seed={self.seed}"

    @property
    def own(self) -> tuple:
        """The settings that make this push what it is: the arm's, and its seed."""
        return (*self.sets, *(() if self.seed is None else (f"seed={self.seed}",)))

    def as_json(self) -> dict:
        return {**asdict(self), "sets": list(self.sets), "label": self.label}


@dataclass(frozen=True)
class SweepOptions:
    message: str = ""  # -m: the prefix of each arm's message
    seeds: int = 1
    submit_best: int = 0
    allow_smoke: bool = False
    accelerator: Optional[str] = None
    timeout: float = 3600.0  # for each arm's run
    again: bool = False  # push an arm whose config already ran to COMPLETE outside this sweep
    # issue 21
    session_timeout_minutes: Optional[float] = None  # each arm's session timeout on Kaggle (push's flag)
    over_quota: bool = False  # push even when the arms' estimates exceed the GPU hours left (given anew on --resume)
    parallel: int = 1  # arms on Kaggle at once (given anew on --resume)


@dataclass(frozen=True)
class Sweep:
    id: str
    shared: tuple  # --set, for every arm
    arms: tuple  # of Arm, one per push
    options: SweepOptions = field(default_factory=SweepOptions)
    created_at: str = ""
    warnings: tuple = field(default=(), compare=False)  # what the arms' checks warned of, each once (not recorded)

    @property
    def pushes(self) -> tuple:
        """The arms to push: those no version of the ledger ran before."""
        return tuple(a for a in self.arms if a.reuses is None)

    def message_of(self, arm: Arm) -> str:
        """The arm's ledger message: the -m prefix, the sweep id and the arm's own settings."""
        head = f"{self.options.message} " if self.options.message else ""
        return f"{head}[sweep {self.id} {arm.name}: {' '.join(arm.own) or 'the shared config'}]"

    def push_options(self, arm: Arm) -> PushOptions:
        o = self.options
        return PushOptions(self.message_of(arm), (*self.shared, *arm.own), o.accelerator, again=o.again,
                           sweep_id=self.id, over_quota=o.over_quota,
                           session_timeout_minutes=o.session_timeout_minutes,
                           sweep_record=json.dumps(self.as_json(), sort_keys=True, separators=(",", ":")))

    def as_json(self) -> dict:
        return {"id": self.id, "created_at": self.created_at, "shared_sets": list(self.shared),
                "options": asdict(self.options), "arms": [a.as_json() for a in self.arms]}


def grid_arms(grid: Sequence[str], list_keys: Sequence[str] = ()) -> list:
    """The settings of each arm of the cartesian product of ``--grid KEY=V1,V2,...`` items (``KEY=V1|V2|...``
    when a value holds commas); ArgumentError for an item that would split a value of ``list_keys`` (the keys
    whose value is a comma-separated list) at its commas."""
    axes, keys = [], set()
    for item in grid:
        key, _, values = item.partition("=")
        key = key.strip()
        separator = "|" if "|" in values else ","
        choices = [v.strip() for v in values.split(separator) if v.strip()]
        if not key or not choices:
            raise ArgumentError(f"--grid {item!r} is empty: give KEY=V1,V2,... (values with commas: KEY='V1|V2')")
        if separator == "," and key in list_keys and len(choices) > 1:
            raise ArgumentError(f"--grid {item} would split {key}, a comma-separated list, into "
                                f"{' and '.join(choices)}: separate its values with | instead (e.g. --grid "
                                f"'{key}={values.strip()}|{choices[0]}'), or give one value with --set {item}")
        if key in keys:
            raise ArgumentError(f"--grid {key} is given twice: list its values in one --grid {key}=V1,V2")
        keys.add(key)
        axes.append([f"{key}={v}" for v in choices])
    return [tuple(c) for c in itertools.product(*axes)] if axes else []


def config_file_arms(path: str) -> list:
    """The settings of each arm a JSON file lists as an override object (``[{"lora_r": 4}, ...]``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgumentError(f"--config {path}: cannot read it ({getattr(exc, 'strerror', None) or type(exc).__name__})")
    data = json_loads_safe(text)
    if not isinstance(data, list) or not data or not all(isinstance(item, dict) for item in data):
        raise ArgumentError(f"--config {path} must hold a non-empty JSON list of override objects, e.g. "
                            '[{"lora_r": 4}, {"lora_r": 8}]')
    return [tuple(_set_text(path, key, value) for key, value in item.items()) for item in data]


def _set_text(path: str, key: str, value) -> str:
    """An override of a config file as --set spells it, so that the kernel parses every arm alike."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (int, float, str)):
        return f"{key}={value}"
    raise ArgumentError(f"--config {path}: {key} must be a number, a string or true/false, got {json.dumps(value)}")


def plan_arms(project: Project, rows: int) -> list:
    """The settings of the first ``rows`` rows of `lorakit plan`."""
    from lorakit.planner import PlanRequest, budget_plan

    if rows < 1:
        raise ArgumentError("--from-plan takes a positive number of rows")
    return [tuple(c.sets) for c in budget_plan(project, PlanRequest(top=rows)).candidates[:rows]]


@dataclass(frozen=True)
class SweepRequest:
    """What `lorakit sweep` was asked for a new sweep."""

    grid: tuple = ()
    from_plan: Optional[int] = None
    config_file: Optional[str] = None
    shared: tuple = ()
    options: SweepOptions = field(default_factory=SweepOptions)


def sweep_new(project: Project, request: SweepRequest) -> Sweep:
    """A new sweep's arms (each with its seeds), checked and counted; nothing recorded or pushed yet."""
    own = grid_arms(request.grid, config_list_keys(project))
    own += plan_arms(project, request.from_plan) if request.from_plan is not None else []
    own += config_file_arms(request.config_file) if request.config_file else []
    if not own:
        raise ArgumentError("a sweep needs arms: --grid KEY=V1,V2,..., --from-plan N or --config FILE")
    seeds = request.options.seeds
    if seeds < 1:
        raise ArgumentError("--seeds takes a positive number of seeds")
    shared_keys = {s.partition("=")[0].strip() for s in request.shared}
    for sets in own:
        keys = {s.partition("=")[0].strip() for s in sets}
        if keys & shared_keys:
            raise ArgumentError(f"{', '.join(sorted(keys & shared_keys))} is both an arm's setting and --set: "
                                "give it in one place")
        if seeds > 1 and "seed" in keys:
            raise ArgumentError("--seeds sets each push's seed: drop seed from the arms")
    first = 0
    if seeds > 1:
        from lorakit.kernel import config_effective

        first = int(config_effective(project, request.shared).config.seed)
    arms = tuple(Arm(f"a{i}", sets, None if seeds == 1 else first + k)
                 for i, sets in enumerate(own, start=1) for k in range(seeds))
    sweep = Sweep("sw-" + secrets.token_hex(3), tuple(request.shared), arms, request.options, utc_now())
    return sweep_check(project, sweep)


def sweep_check(project: Project, sweep: Sweep) -> Sweep:
    """Every arm through the push's offline checks; the sweep with each arm's hash, count and time limit, the
    version it reuses (an arm whose config already ran, without --again) and the checks' warnings. Refuses
    (naming each arm and why, a reason shared by several arms once) when any arm fails, two arms are one
    config, or an arm is a smoke run to be submitted."""
    problems: dict = {}
    arms, warnings = [], []
    for arm in sweep.arms:
        try:
            plan = push_plan(project, sweep.push_options(arm))
        except UsageError as exc:
            problems.setdefault(str(exc), []).append(f"{arm.label} ({' '.join(arm.own) or 'no settings'})")
            continue
        effective = plan.effective
        warnings += [w for w in plan.warnings if w not in warnings]
        arms.append(replace(arm, config_hash=effective.config_hash, trainable_params=effective.trainable_params,
                            time_limit_minutes=float(effective.config.time_limit_minutes)))
        if sweep.options.submit_best and effective.config.smoke and not sweep.options.allow_smoke:
            raise FlagNeeded(f"{arm.label} is a smoke run, which is never submitted: drop --submit-best, or add "
                             "--allow-smoke to exercise the loop against a stand-in; nothing pushed")
    if problems:
        raise UsageError("nothing pushed: " + "; ".join(f"{', '.join(labels)}: {why}"
                                                       for why, labels in problems.items()))
    seen: dict = {}
    for arm in arms:
        if arm.config_hash in seen:
            raise ArgumentError(f"{seen[arm.config_hash]} and {arm.label} are the same config (config_hash "
                                f"{arm.config_hash[:12]}): nothing pushed")
        seen[arm.config_hash] = arm.label
    if not sweep.options.again:
        others = [r for r in ledger_of(project).rows() if r.get("sweep_id") != sweep.id]
        arms = [replace(arm, reuses=reused_version(others, arm.config_hash)) for arm in arms]
    return replace(sweep, arms=tuple(arms), warnings=tuple(warnings))


REUSABLE = (("COMPLETE",), ("QUEUED", "RUNNING"))  # a finished run first, else one still going (waited for)


def reused_version(rows: list, config_hash: str) -> Optional[int]:
    """The newest version among ``rows`` that ran ``config_hash`` to COMPLETE, else the newest still queued or
    running; None when there is none (the arm is pushed)."""
    same = [r for r in rows if r.get("config_hash") == config_hash]
    for statuses in REUSABLE:
        found = [r for r in same if r.get("status") in statuses]
        if found:
            return int(found[-1]["version"])
    return None


def arm_row(rows: list, sweep: Sweep, arm: Arm) -> Optional[dict]:
    """The row of the arm's run among the ledger's ``rows``: its newest push by this sweep (by sweep id and
    config_hash), else the version it reuses; None when it was never pushed."""
    mine = [r for r in rows if r.get("sweep_id") == sweep.id
            and r.get("config_hash") == arm.config_hash and r.get("status") != NOT_PUSHED]
    if mine:
        return mine[-1]
    return next((r for r in rows if arm.reuses is not None and r["version"] == str(arm.reuses)), None)


def sweeps_dir(project: Project) -> Path:
    return project.submissions_dir / "sweeps"


def sweep_record(project: Project, sweep: Sweep) -> Path:
    """Write submissions/sweeps/<id>.json atomically (a temporary file renamed over it): before any push."""
    folder = sweeps_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sweep.id}.json"
    file_write_atomic(path, json.dumps(sweep.as_json(), indent=2, sort_keys=True) + "\n")
    return path


def sweep_load(project: Project, sweep_id: str) -> Sweep:
    """The sweep recorded as submissions/sweeps/<id>.json; UsageError naming the recorded ones otherwise."""
    if not SWEEP_ID.fullmatch(sweep_id or ""):
        raise ArgumentError(f"--resume takes a sweep id such as sw-1a2b3c, got {sweep_id!r}")
    path = sweeps_dir(project) / f"{sweep_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in sweeps_dir(project).glob("sw-*.json")) if sweeps_dir(project).is_dir() else []
        raise NotFound(f"no sweep {sweep_id} in {path.parent.relative_to(project.root)}/; recorded sweeps: "
                         f"{', '.join(known) or 'none'} (in another clone, lorakit sync restores them)")
    sweep = sweep_of(json_loads_safe(path.read_text(encoding="utf-8", errors="replace")))
    if sweep is None or sweep.id != sweep_id:
        raise UsageError(f"{path.relative_to(project.root)} is not a sweep lorakit recorded (corrupted?)")
    return sweep


def sweeps_recorded(project: Project, notes: Optional[list] = None) -> list:
    """The sweeps recorded in submissions/sweeps/, newest first; one that does not read is named in ``notes``."""
    sweeps = []
    for path in sorted(sweeps_dir(project).glob("sw-*.json")) if sweeps_dir(project).is_dir() else []:
        sweep = sweep_of(json_loads_safe(path.read_text(encoding="utf-8", errors="replace")))
        if sweep is None and notes is not None:
            notes.append(f"{path.relative_to(project.root)} is not a sweep lorakit recorded (corrupted?): left out")
        sweeps += [sweep] if sweep is not None else []
    return sorted(sweeps, key=lambda s: s.created_at, reverse=True)


def sweep_of(data) -> Optional[Sweep]:
    """The sweep a record (Sweep.as_json, read as untrusted JSON) describes; None when it describes none."""
    try:
        arms = tuple(Arm(str(a["name"]), tuple(str(s) for s in a["sets"]), None if a["seed"] is None else int(a["seed"]),
                         str(a["config_hash"]), int(a["trainable_params"]), float(a["time_limit_minutes"]),
                         None if a.get("reuses") is None else int(a["reuses"]))
                     for a in data["arms"])
        options = SweepOptions(**{k: v for k, v in data["options"].items() if k in SweepOptions.__dataclass_fields__})
        sweep = Sweep(str(data["id"]), tuple(str(s) for s in data["shared_sets"]), arms, options, str(data["created_at"]))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return sweep if SWEEP_ID.fullmatch(sweep.id) and sweep.arms else None


def sweep_restore(project: Project, text: str, sweep_id: str, dry_run: bool = False) -> Optional[str]:
    """Write submissions/sweeps/<id>.json from the sweep record a pushed script carried (sync, in a clone that
    lacks it); the path written (with ``dry_run``: that would be), None when it exists or ``text`` is none."""
    sweep = sweep_of(json_loads_safe(text or ""))
    if sweep is None or sweep.id != sweep_id:
        return None
    path = sweeps_dir(project) / f"{sweep.id}.json"
    if path.exists():
        return None
    if not dry_run:
        sweep_record(project, sweep)
    return str(path.relative_to(project.root))
