"""`lorakit versions`: one row per version of the kernel that the ledger knows, newest first.

Offline: it reads submissions/ledger.csv and the pulled folders (submissions/v<N>/) only, so it shows what the
last `status`, `pull`, `scores` or `sync` recorded. A version's ``state`` is the first of these that holds:

- scored:    its submission (the ledger's submission_ref) has a public score
- submitted: it was submitted (submission_ref recorded) and has no score yet
- error:     the last status seen is ERROR or a cancellation, whatever was pulled of it
- pulled:    its folder submissions/v<N>/ exists
- complete:  the last status seen is COMPLETE, and its outputs are not pulled yet
- running:   the last status seen is RUNNING
- sending:   recorded before it was sent and not confirmed yet (SENDING, UNCONFIRMED): it may have no number yet
- pushed:    Kaggle numbered it and nothing later was seen (QUEUED, or NEW_SCRIPT for a --no-run push)

A push found never to have reached Kaggle (NOT_PUSHED) is no version and is not listed.

Marks: ``smoke`` (the run predicted on synthetic smoke data, or its config says smoke=true), ``interrupted``
(metrics.json says a signal stopped training early), ``not comparable: <reason>`` (a pulled folder without
metrics.json or without pairable validation predictions, as lorakit.runs says), ``push problem: <what>``
(Kaggle's reply to the push refused some of it: a source, a tag, the kernel meant) and ``failed: <reason>``
(an ERROR version: Kaggle's failure message). The Docker image each version ran on (recorded when it ended as
the kernel's newest version) is a column when the versions differ.

``changes`` is what tells the rows listed apart: every config key whose value differs among them, each row with
its own value (a row listed alone: what it changes from the kernel's defaults); what every row listed changes
alike is said once below the table. ``--where`` keeps the rows that match (a config key, state, status, tags,
a measure; ``=``, ``!=``, ``<``, ``>``, ``<=``, ``>=``), ``--sort`` orders them (measures best first). Versions that
differ only in seed form seed groups (lorakit.seeds), shown below the table with their mean and spread.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
from dataclasses import dataclass, field, replace
from typing import Optional

from lorakit.common import FAILED_KERNEL, NOT_PUSHED, UNCONFIRMED, ledger_of, overrides_of, predicted_on_of
from lorakit.console import (
    CSV, JSON, changes_text, command, flag, note, one_format, project_of, shorten, table, value_text, warn,
)
from lorakit.errors import ArgumentError
from lorakit.inflight import push_unsettled_words
from lorakit.kernel import config_defaults, config_resolved, config_where_keys
from lorakit.ledger import SENDING
from lorakit.notes import notes_text, tags_of
from lorakit.project import Project
from lorakit.runs import PulledRun, pulled_run_load, run_numbers
from lorakit.seeds import seed_groups, seed_groups_show
from lorakit.stats import accuracy_interval, finite_number

REFRESHED_BY = "lorakit status, pull, scores and sync refresh what it shows"


@dataclass(frozen=True)
class VersionRow:
    version: Optional[int]  # None: a push recorded but not numbered yet (state sending)
    message: str
    state: str
    status: str  # the kernel status the ledger saw last
    pushed_at: str
    changes: dict  # config key -> value, for every key that differs among the rows listed (alone: from the defaults)
    trainable_params: Optional[int]
    val_accuracy: Optional[float]
    val_rows: Optional[int]  # the validation slice's size (metrics.json), behind the interval
    val_interval: Optional[tuple]  # Wilson's 95% interval of val_accuracy on val_rows rows
    train_minutes: Optional[float]
    device: str
    submitted_at: str
    public_score: Optional[float]
    private_score: Optional[float]
    smoke: bool
    interrupted: str  # "" or what stopped it ("SIGTERM"; "interrupted" when metrics.json names no signal)
    not_comparable: str  # "" or why the pulled folder cannot be paired with another
    run: Optional[PulledRun] = field(default=None, compare=False, repr=False)  # the pulled folder, as read
    push_problem: str = ""  # what Kaggle's reply to the push refused (the ledger's push_problem)
    docker_image: str = ""  # the image the run ran on, when recorded
    machine_shape: str = ""
    from_defaults: dict = field(default_factory=dict)  # config key -> value, where it differs from the default
    config: Optional[dict] = field(default=None, compare=False, repr=False)  # what ran (where-keys left out)
    note: str = ""  # lorakit note
    tags: tuple = ()  # lorakit tag
    failure_message: str = ""  # why an ERROR version failed, as Kaggle said it
    sweep_id: str = ""

    @property
    def marks(self) -> list:
        """smoke, interrupted (SIGTERM), not comparable: <reason>, push problem: <what>: the ones that hold."""
        marks = ["smoke"] if self.smoke else []
        if self.state == "error":
            marks.append("failed: " + (self.failure_message or f"{self.status} (no failure message recorded)"))
        if self.interrupted:
            marks.append("interrupted" + ("" if self.interrupted == "interrupted" else f" ({self.interrupted})"))
        if self.not_comparable:
            marks.append(f"not comparable: {self.not_comparable}")
        if self.push_problem:
            marks.append(f"push problem: {self.push_problem}")
        return marks

    def as_json(self) -> dict:
        low, high = self.val_interval or (None, None)
        return {"version": self.version, "message": self.message, "state": self.state, "status": self.status,
                "pushed_at": self.pushed_at, "changes": self.changes, "trainable_params": self.trainable_params,
                "val_accuracy": self.val_accuracy, "val_rows": self.val_rows, "val_low": low, "val_high": high,
                "train_minutes": self.train_minutes, "device": self.device, "submitted_at": self.submitted_at,
                "public_score": self.public_score, "private_score": self.private_score, "smoke": self.smoke,
                "interrupted": bool(self.interrupted), "signal": self.interrupted or None,
                "not_comparable": self.not_comparable or None, "marks": self.marks,
                "push_problem": self.push_problem or None, "docker_image": self.docker_image or None,
                "machine_shape": self.machine_shape or None,
                "changes_from_defaults": self.from_defaults, "seed": (self.config or {}).get("seed"),
                "note": self.note, "tags": list(self.tags), "failure_message": self.failure_message or None,
                "sweep_id": self.sweep_id or None}


def versions_list(project: Project, query: Optional["Query"] = None) -> list[VersionRow]:
    """The versions of the project's kernel (--kernel) that the ledger knows and ``query`` keeps, newest first
    or in its order, each row's ``changes`` the keys that differ among them; LedgerError for a corrupted ledger
    (nothing is written), ArgumentError naming the keys of ``query`` that are none."""
    ledger = ledger_of(project)
    records = [r for r in ledger.all_rows() if ledger.owns(r) and r.get("status") != NOT_PUSHED]
    records.sort(key=lambda r: (int(r["version"]) if r["version"] else math.inf, r.get("pushed_at", "")),
                 reverse=True)  # pushes not numbered yet first, then the newest version
    where = set(config_where_keys(project))  # where a run read and wrote (output_dir...): not a change it tried
    defaults = {k: v for k, v in config_defaults(project).items() if k not in where}
    query = query or Query()
    query_check(query, defaults)
    rows = query.applied([version_row(project, r, defaults) for r in records])
    return changes_among(rows)


def version_row(project: Project, record: dict, defaults: dict) -> VersionRow:
    """One ledger row and what its pulled folder (if any) says; the ledger's numbers where the folder is silent."""
    version = int(record["version"]) if record.get("version") else None
    run = pulled_run_load(project, version, project.kernel) if version is not None else None
    pulled = run is not None and run.pulled
    metrics = (run.metrics if pulled else None) or {}
    said = run.numbers() if pulled else {}  # the pulled folder first, the ledger where it is silent
    numbers = {**_ledger_numbers(record), **{k: v for k, v in said.items() if v is not None}}
    config = config_of(project, defaults, record, metrics)
    from_defaults = {key: config[key] for key in sorted(config) if config[key] != defaults[key]}
    return VersionRow(
        version=version, message=record.get("message", ""), state=state_of(record, pulled),
        status=record.get("status", ""), pushed_at=record.get("pushed_at", ""), changes=from_defaults,
        trainable_params=numbers["trainable_params"] or _count(record.get("trainable_params")),
        val_accuracy=numbers["val_accuracy"], val_rows=numbers["val_rows"],
        val_interval=_interval(numbers["val_accuracy"], numbers["val_rows"]),
        train_minutes=numbers["train_minutes"], device=numbers["device"] or "",
        submitted_at=record.get("submitted_at", ""), public_score=finite_number(record.get("public_score")),
        private_score=finite_number(record.get("private_score")), smoke=_smoke(version, record, metrics),
        interrupted=_interruption(metrics), not_comparable=run.reason if pulled else "",
        run=run if pulled else None, push_problem=record.get("push_problem", ""),
        docker_image=record.get("docker_image", ""), machine_shape=record.get("machine_shape", ""),
        from_defaults=from_defaults, config=config,
        note=" ".join((record.get("note") or "").split()), tags=tuple(tags_of(record)),
        failure_message=" ".join((record.get("failure_message") or "").split()), sweep_id=record.get("sweep_id", ""))


def _ledger_numbers(record: dict) -> dict:
    """What the ledger row says of the run (pull and sync write it from metrics.json): the numbers of a version
    that is not pulled here (a second clone), under run_numbers' names."""
    rows = finite_number(record.get("val_rows"))
    return {**run_numbers(None, None), "val_accuracy": finite_number(record.get("val_accuracy")),
            "val_rows": int(rows) if rows and rows >= 1 else None,
            "train_minutes": finite_number(record.get("train_minutes")), "device": record.get("device") or None}


def state_of(record: dict, pulled: bool) -> str:
    """The version's state (see the module's docstring) from its ledger row and whether its folder exists."""
    status = record.get("status", "")
    if finite_number(record.get("public_score")) is not None:
        return "scored"
    if record.get("submission_ref"):
        return "submitted"
    if status in FAILED_KERNEL:
        return "error"
    if pulled:
        return "pulled"
    if status in (SENDING, UNCONFIRMED) or not record.get("version"):
        return "sending"
    return {"COMPLETE": "complete", "RUNNING": "running"}.get(status, "pushed")


def config_of(project: Project, defaults: dict, record: dict, metrics: dict) -> dict:
    """The config of ``defaults``' keys the run used, as metrics.json says when it is pulled, else as the ledger's
    overrides give it (smoke defaults included). The caller leaves out of ``defaults`` the keys that say where a
    run read and wrote."""
    ran = metrics.get("config")
    config = ran if isinstance(ran, dict) else config_resolved(project, overrides_of(record) or {})
    return {key: config[key] for key in sorted(defaults) if key in config}


def changes_among(rows: list) -> list:
    """``rows`` with their ``changes`` the config keys whose values differ among them (each row its own values);
    a row alone keeps what it changes from the defaults."""
    known = [r.config for r in rows if r.config is not None]
    if len(known) < 2:
        return rows
    differ = sorted({k for c in known for k in c if any(other.get(k) != c.get(k) for other in known)})
    return [replace(r, changes={k: r.config.get(k) for k in differ}) if r.config is not None else r for r in rows]


def shared_changes(rows: list) -> dict:
    """What every row listed changes alike from the defaults (said once, below the table)."""
    known = [r for r in rows if r.config is not None]
    if len(known) < 2:
        return {}
    return {k: v for k, v in known[0].from_defaults.items() if all(r.config.get(k) == v for r in known)}


def interval_text(row: VersionRow) -> str:
    """0.9020 [0.8884-0.9141]: the validation accuracy and its 95% interval, as far as they are known."""
    if row.val_accuracy is None:
        return "-"
    if row.val_interval is None:
        return f"{row.val_accuracy:.4f}"
    return f"{row.val_accuracy:.4f} [{row.val_interval[0]:.4f}-{row.val_interval[1]:.4f}]"


WIDTHS = {"message": 40, "change": 24, "device": 24, "notes": 40, "marks": 60}  # table cells, without --wide
TABLE_HEADERS = ("version", "state", "message", "changes", "params", "val_acc [95% CI]", "train min", "device",
                 "public", "private", "notes", "marks")


def table_cells(row: VersionRow, wide: bool = False) -> list:
    """The row as the cells under TABLE_HEADERS (`versions` prints them, `report` shows them); long texts
    shortened in the middle (WIDTHS) unless ``wide``."""
    width = (lambda key: None) if wide else WIDTHS.get
    return ["-" if row.version is None else f"v{row.version}", row.state, shorten(row.message, width("message")),
            changes_text(row.changes, width("change")) or "-",
            "-" if row.trainable_params is None else f"{row.trainable_params:,}", interval_text(row),
            "-" if row.train_minutes is None else f"{row.train_minutes:.1f}", shorten(row.device, width("device")) or "-",
            _score_text(row.public_score), _score_text(row.private_score),
            shorten(notes_text({"note": row.note, "tags": ",".join(row.tags)}), width("notes")),
            shorten("; ".join(row.marks), width("marks"))]


def _score_text(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.5f}"


CSV_COLUMNS = ("version", "state", "message", "changes", "trainable_params", "val_accuracy", "val_low", "val_high",
               "val_rows", "train_minutes", "device", "public_score", "private_score", "submitted_at", "pushed_at",
               "status", "smoke", "interrupted", "not_comparable", "push_problem", "docker_image", "machine_shape",
               "note", "tags", "failure_message", "sweep_id", "seed", "changes_from_defaults")


def images_differ(rows: list) -> bool:
    """Whether the versions ran on more than one recorded Docker image (then `versions` shows each one's)."""
    return len({row.docker_image for row in rows if row.docker_image}) > 1


def image_text(row: VersionRow) -> str:
    """The image's name and tag, without its registry path: gcr.io/kaggle-gpu-images/python:v157 -> python:v157."""
    return row.docker_image.rsplit("/", 1)[-1] if row.docker_image else "-"


def versions_csv(rows: list[VersionRow]) -> str:
    """The rows as CSV with a header (pandas.read_csv reads it: empty cells for unknowns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        data = {**row.as_json(), "changes": changes_text(row.changes), "tags": ",".join(row.tags),
                "changes_from_defaults": changes_text(row.from_defaults)}
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def _smoke(version: Optional[int], record: dict, metrics: dict) -> bool:
    """Whether the run predicted on smoke data (common.predicted_on_of of its pulled metrics.json); for a push
    not numbered yet, whether its overrides say smoke=true."""
    if version is None:
        return (overrides_of(record) or {}).get("smoke") is True
    return predicted_on_of(metrics, record)[0] == "smoke"


def _interruption(metrics: dict) -> str:
    signal = metrics.get("signal")
    if signal:
        return str(signal)
    return "interrupted" if metrics.get("interrupted") is True else ""


def _interval(accuracy: Optional[float], rows: Optional[int]) -> Optional[tuple]:
    if accuracy is None or not rows or not 0.0 <= accuracy <= 1.0:
        return None
    low, high = accuracy_interval(accuracy, rows)
    return round(low, 6), round(high, 6)


def _count(value) -> Optional[int]:
    number = finite_number(value)
    return int(number) if number is not None and number >= 0 and number == int(number) else None


# ----------------------------------------------------------------------------------------------- query
# What --where and --sort name besides the config keys, and how (each a VersionRow attribute)
FIELDS = ("version", "state", "status", "message", "note", "tags", "sweep_id", "val_accuracy", "val_rows",
          "train_minutes", "trainable_params", "device", "public_score", "private_score", "pushed_at",
          "submitted_at", "smoke", "failure_message")
ALIASES = {"tag": "tags", "val_acc": "val_accuracy", "public": "public_score", "private": "private_score",
           "params": "trainable_params", "sweep": "sweep_id", "failure": "failure_message"}
BEST_FIRST = ("val_accuracy", "public_score", "private_score")  # --sort puts the highest first
CONTAINS = ("message", "note", "failure_message")  # --where KEY=TEXT matches a part, in any case
CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|>=|<=|=|>|<)(.*)$")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: str

    def holds(self, row: VersionRow) -> bool:
        value = row_value(row, self.key)
        if value is None or value == "" or value == ():
            return self.op == "!="
        if isinstance(value, tuple):  # tags: = has it, != lacks it
            return (self.value in value) == (self.op == "=")
        a, b = finite_number(value), finite_number(self.value)
        if a is None or b is None:
            a, b = value_text(value).lower(), self.value.strip().lower()
            if self.key in CONTAINS and self.op in ("=", "!="):
                return (b in a) == (self.op == "=")
        return {"=": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[self.op]


@dataclass(frozen=True)
class Query:
    """--where (every condition holds) and --sort KEY (measures best first; --reverse flips it), of versions."""

    where: tuple = ()  # of Condition
    sort: str = ""
    reverse: bool = False

    def keys(self) -> list:
        return [*(c.key for c in self.where), *([self.sort] if self.sort else [])]

    def applied(self, rows: list) -> list:
        rows = [r for r in rows if all(c.holds(r) for c in self.where)]
        if not self.sort:
            return rows[::-1] if self.reverse else rows
        known = [r for r in rows if row_value(r, self.sort) not in (None, "", ())]
        known.sort(key=lambda r: _sort_key(row_value(r, self.sort)), reverse=(self.sort in BEST_FIRST) != self.reverse)
        return known + [r for r in rows if r not in known]  # the unknowns last, whatever the order


def condition_parse(text: str) -> Condition:
    """--where KEY=VALUE (or !=, <, >, <=, >=) as a Condition; ArgumentError for another shape."""
    match = CONDITION.match(text)
    if not match or not match.group(3).strip():
        raise ArgumentError(f"--where takes KEY=VALUE (or KEY!=, KEY>, KEY<, KEY>=, KEY<= VALUE), got {text!r}")
    key, op, value = match.groups()
    key = ALIASES.get(key, key)
    if key == "tags" and op not in ("=", "!="):
        raise ArgumentError(f"--where {text}: tags take = (has the tag) or != (lacks it)")
    return Condition(key, op, value.strip())


def query_check(query: Query, defaults: dict) -> None:
    """ArgumentError naming, once, each key of ``query`` that is neither a field nor a config key."""
    unknown = list(dict.fromkeys(k for k in query.keys() if k not in FIELDS and k not in defaults))
    if unknown:
        known = [*FIELDS, *ALIASES, *defaults]
        close = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
        raise ArgumentError(f"unknown key {', '.join(repr(k) for k in unknown)} in --where/--sort"
                            + (f" (did you mean {', '.join(close)}?)" if close else "")
                            + f": use a config key or one of {', '.join(FIELDS)}")


def row_value(row: VersionRow, key: str):
    """What a row says of ``key``: its field, else its config's value (None when unknown)."""
    if key in FIELDS:
        return getattr(row, key)
    return (row.config or {}).get(key)


def _sort_key(value) -> tuple:
    number = finite_number(value)
    return (0, number, "") if number is not None else (1, 0.0, value_text(value))


# ------------------------------------------------------------------------------------- the command line
@command(
    "versions",
    "every version the ledger knows, newest first: state, config changes, validation accuracy with its "
    "confidence interval, scores (offline: status, pull, scores and sync refresh it)",
    flag("--where", action="append", default=[], metavar="KEY=VALUE",
         help="only the versions where KEY (a config key, state, status, tags, message, note, val_accuracy, "
              "public_score, ...) is VALUE; also !=, <, >, <=, >= (repeatable: all must hold), e.g. --where "
              "tags=final --where lora_r>=8"),
    flag("--sort", metavar="KEY", help="order by KEY (val_accuracy and the scores best first, the rest ascending; "
                                       "the unknowns last)"),
    flag("--reverse", action="store_true", help="the other order"),
    flag("--wide", action="store_true", help="long messages, values and notes whole (shortened in the middle "
                                             "otherwise)"),
    CSV,
    JSON,
)
def cmd_versions(args) -> int:
    one_format(args)
    out = args.out
    query = Query(tuple(condition_parse(w) for w in args.where), ALIASES.get(args.sort, args.sort or ""),
                  args.reverse)
    project = project_of(args)
    rows = versions_list(project, query)
    groups, shared = seed_groups(rows), shared_changes(rows)
    out.document({"kernel": str(project.kernel), "versions": [r.as_json() for r in rows], "shared_changes": shared,
                  "seed_groups": [g.as_json() for g in groups]})
    if args.csv:
        out.text(versions_csv(rows))
    elif not rows:
        out.result(f"no versions of {project.kernel} in the ledger yet: lorakit push records them" if not args.where
                   else f"no version of {project.kernel} in the ledger matches {' and '.join(args.where)}")
    else:
        image = images_differ(rows)  # the versions ran on different images: say which ran on which
        out.result(table([*TABLE_HEADERS, *(["image"] if image else [])],
                         [[*table_cells(r, args.wide), *([image_text(r)] if image else [])] for r in rows]))
        if shared:
            out.result(f"every version listed: {changes_text(shared, None if args.wide else WIDTHS['change'])}")
        seed_groups_show(out, groups)
        note(f"offline: {REFRESHED_BY}")
    _unsound_show(project, rows)
    return 0


def _unsound_show(project: Project, rows: list) -> None:
    """One line per push not settled yet (in flight, or not found yet) and per damaged pulled folder."""
    for record in ledger_of(project).provisional():
        if record.get("status") == SENDING:
            note(f"a push of config_hash {record.get('config_hash', '')[:12]} {push_unsettled_words(record)}")
    for row in rows:
        if row.run is not None and row.run.damage:
            warn(f"v{row.version} is damaged: {row.run.damage}")
