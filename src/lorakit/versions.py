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
metrics.json or without pairable validation predictions, as lorakit.runs says) and ``push problem: <what>``
(Kaggle's reply to the push refused some of it: a source, a tag, the kernel meant). The Docker image each
version ran on (recorded when it ended as the kernel's newest version) is a column when the versions differ.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Optional

from lorakit.common import FAILED_KERNEL, NOT_PUSHED, UNCONFIRMED, ledger_of, overrides_of, predicted_on_of
from lorakit.console import CSV, JSON, command, note, one_format, project_of, table, warn
from lorakit.inflight import push_unsettled_words
from lorakit.kernel import config_defaults, config_resolved, config_where_keys
from lorakit.ledger import SENDING
from lorakit.project import Project
from lorakit.runs import PulledRun, pulled_run_load, run_numbers
from lorakit.stats import accuracy_interval, finite_number

REFRESHED_BY = "lorakit status, pull, scores and sync refresh what it shows"


@dataclass(frozen=True)
class VersionRow:
    version: Optional[int]  # None: a push recorded but not numbered yet (state sending)
    message: str
    state: str
    status: str  # the kernel status the ledger saw last
    pushed_at: str
    changes: dict  # config key -> value, for every key that differs from the kernel's default
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

    @property
    def marks(self) -> list:
        """smoke, interrupted (SIGTERM), not comparable: <reason>, push problem: <what>: the ones that hold."""
        marks = ["smoke"] if self.smoke else []
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
                "machine_shape": self.machine_shape or None}


def versions_list(project: Project) -> list[VersionRow]:
    """Every version of the project's kernel (--kernel) that the ledger knows, newest first; LedgerError for a
    corrupted ledger (nothing is written)."""
    ledger = ledger_of(project)
    records = [r for r in ledger.all_rows() if ledger.owns(r) and r.get("status") != NOT_PUSHED]
    records.sort(key=lambda r: (int(r["version"]) if r["version"] else math.inf, r.get("pushed_at", "")),
                 reverse=True)  # pushes not numbered yet first, then the newest version
    where = set(config_where_keys(project))  # where a run read and wrote (output_dir...): not a change it tried
    defaults = {k: v for k, v in config_defaults(project).items() if k not in where}
    return [version_row(project, r, defaults) for r in records]


def version_row(project: Project, record: dict, defaults: dict) -> VersionRow:
    """One ledger row and what its pulled folder (if any) says; the ledger's numbers where the folder is silent."""
    version = int(record["version"]) if record.get("version") else None
    run = pulled_run_load(project, version, project.kernel) if version is not None else None
    pulled = run is not None and run.pulled
    metrics = (run.metrics if pulled else None) or {}
    numbers = run.numbers() if pulled else run_numbers(None, None)
    accuracy = numbers["val_accuracy"]
    if accuracy is None:
        accuracy = finite_number(record.get("val_accuracy"))
    return VersionRow(
        version=version, message=record.get("message", ""), state=state_of(record, pulled),
        status=record.get("status", ""), pushed_at=record.get("pushed_at", ""),
        changes=changes_of(project, defaults, record, metrics),
        trainable_params=numbers["trainable_params"] or _count(record.get("trainable_params")),
        val_accuracy=accuracy, val_rows=numbers["val_rows"], val_interval=_interval(accuracy, numbers["val_rows"]),
        train_minutes=numbers["train_minutes"], device=numbers["device"] or "",
        submitted_at=record.get("submitted_at", ""), public_score=finite_number(record.get("public_score")),
        private_score=finite_number(record.get("private_score")), smoke=_smoke(version, record, metrics),
        interrupted=_interruption(metrics), not_comparable=run.reason if pulled else "",
        run=run if pulled else None, push_problem=record.get("push_problem", ""),
        docker_image=record.get("docker_image", ""), machine_shape=record.get("machine_shape", ""))


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


def changes_of(project: Project, defaults: dict, record: dict, metrics: dict) -> dict:
    """The config keys of ``defaults`` whose value differs: in the config metrics.json says the run used when it
    is pulled, else in the config the ledger's overrides give (smoke defaults included). The caller leaves out
    of ``defaults`` the keys that say where a run read and wrote."""
    ran = metrics.get("config")
    config = ran if isinstance(ran, dict) else config_resolved(project, overrides_of(record) or {})
    return {key: config[key] for key in sorted(defaults) if key in config and config[key] != defaults[key]}


def changes_text(changes: dict, value_width: Optional[int] = None) -> str:
    """key=value pairs, space-separated: what a version changed, compactly (each value cut to ``value_width``
    characters when given: an adapter's sha256 needs no more than its start in a table)."""
    return " ".join(f"{key}={_cut(_value_text(value), value_width)}" for key, value in changes.items())


def _cut(text: str, width: Optional[int]) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "~"


def interval_text(row: VersionRow) -> str:
    """0.9020 [0.8884-0.9141]: the validation accuracy and its 95% interval, as far as they are known."""
    if row.val_accuracy is None:
        return "-"
    if row.val_interval is None:
        return f"{row.val_accuracy:.4f}"
    return f"{row.val_accuracy:.4f} [{row.val_interval[0]:.4f}-{row.val_interval[1]:.4f}]"


CHANGE_WIDTH = 20  # a value in the table's changes column: longer ones (paths, digests) are cut
TABLE_HEADERS = ("version", "state", "message", "changes", "params", "val_acc [95% CI]", "train min", "device",
                 "public", "private", "marks")


def table_cells(row: VersionRow, message_width: Optional[int] = None) -> list:
    """The row as the cells under TABLE_HEADERS (`versions` prints them, `report` shows them); the message cut
    to ``message_width`` characters when given."""
    return ["-" if row.version is None else f"v{row.version}", row.state, _cut(row.message, message_width),
            changes_text(row.changes, CHANGE_WIDTH) or "-",
            "-" if row.trainable_params is None else f"{row.trainable_params:,}", interval_text(row),
            "-" if row.train_minutes is None else f"{row.train_minutes:.1f}", row.device or "-",
            _score_text(row.public_score), _score_text(row.private_score), "; ".join(row.marks)]


def _score_text(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.5f}"


CSV_COLUMNS = ("version", "state", "message", "changes", "trainable_params", "val_accuracy", "val_low", "val_high",
               "val_rows", "train_minutes", "device", "public_score", "private_score", "submitted_at", "pushed_at",
               "status", "smoke", "interrupted", "not_comparable", "push_problem", "docker_image", "machine_shape")


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
        data = {**row.as_json(), "changes": changes_text(row.changes)}
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def _value_text(value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


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


# ------------------------------------------------------------------------------------- the command line
@command(
    "versions",
    "every version the ledger knows, newest first: state, config changes, validation accuracy with its "
    "confidence interval, scores (offline: status, pull, scores and sync refresh it)",
    CSV,
    JSON,
)
def cmd_versions(args) -> int:
    one_format(args)
    out = args.out
    project = project_of(args)
    rows = versions_list(project)
    out.document({"kernel": str(project.kernel), "versions": [r.as_json() for r in rows]})
    if args.csv:
        out.text(versions_csv(rows))
    elif not rows:
        out.result(f"no versions of {project.kernel} in the ledger yet: lorakit push records them")
    else:
        image = images_differ(rows)  # the versions ran on different images: say which ran on which
        out.result(table([*TABLE_HEADERS, *(["image"] if image else [])],
                         [[*table_cells(r, message_width=40), *([image_text(r)] if image else [])] for r in rows]))
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
