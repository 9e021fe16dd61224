"""`lorakit report`: one self-contained HTML file of the kernel's versions, to open in any browser offline.

It holds the versions table (the rows of `lorakit versions`, notes and tags included) and its seed groups, the
config keys that differ among the chosen versions, their validation curves overlaid (val_accuracy by epoch from
metrics.json's history; train and validation loss when recorded; a run of one epoch is a labelled marker), their
training loss per step (metrics.json's loss_curve), their confusion matrices on the validation slice (from
logits.npz), the public and private scores over time (the ledger's submitted_at and scores, each point labelled
by its version), and each recorded sweep's ranking with its p-values. Its title is the kernel pushed to (the
ledger's kernel_ref), not the metadata's placeholder owner. The charts are inline SVG drawn here (lorakit.charts):
no script, no stylesheet or font from elsewhere, nothing fetched when it is viewed. Every text from the ledger
or a pulled folder (a -m message is the user's own text) is escaped with html.escape. The file is written to a
temporary file beside it and renamed over it, so an existing report is replaced whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from lorakit.arms import sweeps_recorded
from lorakit.charts import PALETTE, Series, confusion_svg, esc, line_chart, number_ticks, time_ticks
from lorakit.common import LABELS, ledger_of, output_path_check, utc_now, version_parse
from lorakit.console import JSON, changes_text, command, flag, note, plural, project_of, value_text, warn
from lorakit.errors import ArgumentError, NotFound, UsageError
from lorakit.ledger import file_write_atomic
from lorakit.project import KernelRef, Project
from lorakit.ranking import ranked_noise, ranked_table, sweep_rank
from lorakit.runs import PulledRun, pull_command, pulled_run_load
from lorakit.seeds import figures_text, seed_groups
from lorakit.stats import finite_number
from lorakit.versions import TABLE_HEADERS, VersionRow, shared_changes, table_cells, versions_list

DEFAULT_CHOSEN = 8  # without --versions: the newest pulled versions, as many as one chart can tell apart


@dataclass(frozen=True)
class Report:
    path: Path
    versions: tuple  # the versions whose curves and confusion matrices it shows
    charts: int  # the SVG charts in it
    notes: tuple  # what it could not show, and why

    def as_json(self) -> dict:
        return {"path": str(self.path), "versions": list(self.versions), "charts": self.charts,
                "notes": list(self.notes)}


def report_path_check(project: Project, out: Optional[str]) -> Path:
    """--out PATH (default submissions/report.html), refused before any work when it cannot be written."""
    return output_path_check(out or project.submissions_dir / "report.html", "--out")


def versions_parse(text: Optional[str]) -> Optional[list]:
    """--versions 3,5,7 as [3, 5, 7] (repeats dropped); None without the flag."""
    if text is None:
        return None
    pieces = [p.strip() for p in text.split(",") if p.strip()]
    if not pieces:
        raise ArgumentError("--versions needs version numbers, e.g. --versions 3,5,7")
    return list(dict.fromkeys(version_parse(p) for p in pieces))


def versions_chosen(project: Project, rows: list[VersionRow], asked: Optional[list]) -> list:
    """The versions asked for, each known to the ledger and pulled; without --versions the newest pulled ones."""
    known = [r.version for r in rows if r.version is not None]
    if asked is None:
        return sorted([v for v in known if project.version_dir(v).is_dir()][:DEFAULT_CHOSEN])
    for version in asked:
        if version not in known:
            have = ", ".join(f"v{v}" for v in sorted(known)) or "none"
            raise NotFound(f"v{version} is not in the ledger of {project.kernel} (it has: {have})")
        if not project.version_dir(version).is_dir():
            raise NotFound(f"v{version} is not pulled: run `{pull_command(version, project.kernel, project)}`")
    return asked


def report_make(project: Project, path: Path, asked: Optional[list]) -> Report:
    """Read the ledger and the chosen versions' folders, and write the report to ``path``."""
    rows = versions_list(project)
    chosen = versions_chosen(project, rows, asked)
    read = {r.version: r.run for r in rows if r.run is not None}  # versions_list read each pulled folder once
    runs = [read.get(v) or pulled_run_load(project, v, project.kernel) for v in chosen]
    notes = [f"v{r.version} not comparable: {r.reason}" if r.reason else f"v{r.version}: {r.damage}"
             for r in runs if r.reason or r.damage]
    sections = [_table_section(rows), _seed_groups_section(rows), _config_section(rows, chosen),
                _curves_section(runs, notes), _loss_steps_section(runs), _confusion_section(runs),
                _scores_section(rows), _sweeps_section(project, notes)]
    body = "\n".join(sections)
    kernel = kernel_shown(project)
    page = _page(f"lorakit report: {kernel}", _heading(project, kernel, rows, chosen) + body + _notes_html(notes))
    try:
        file_write_atomic(path, page)
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write it ({exc.strerror or type(exc).__name__})") from None
    return Report(path, tuple(chosen), body.count("<svg "), tuple(notes))


# ------------------------------------------------------------------------------------------------ page
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; white-space: nowrap; }
th { background: #f3f3f3; }
td.message, td.changes, td.marks, td.notes, td.wide { white-space: normal; max-width: 320px; overflow-wrap: anywhere; }
p.caption { color: #555; font-size: 13px; max-width: 960px; }
figure { display: inline-block; margin: 8px 16px 8px 0; }
svg text { font: 11px sans-serif; fill: #222; }
.note { color: #8a4b00; }
"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def kernel_shown(project: Project) -> str:
    """The kernel the versions were pushed to: the metadata's, or where its owner is a placeholder, the ledger's
    kernel_ref of the newest version (push resolved the owner to your username)."""
    if not project.kernel.is_placeholder:
        return str(project.kernel)
    refs = [KernelRef.parse_or_none(r.get("kernel_ref", "")) for r in ledger_of(project).rows()]
    real = [ref for ref in refs if ref is not None and not ref.is_placeholder]
    return str(real[-1]) if real else str(project.kernel)


def _heading(project: Project, kernel: str, rows: list[VersionRow], chosen: list) -> str:
    shown = ", ".join(f"v{v}" for v in chosen) or "none pulled"
    return (f"<h1>{esc(kernel)}</h1>\n<p>Competition {esc(project.competition)}; "
            f"{esc(plural(len(rows), 'version'))} in the ledger; curves and confusion matrices of {esc(shown)}. "
            f"Written {esc(utc_now())} by <code>lorakit report</code> from the ledger and the pulled folders.</p>\n")


def html_table(headers: list, rows: list, name: str = "", wide: tuple = ()) -> str:
    """An HTML table; each cell escaped, its class the column's first word (``wide`` columns wrap)."""
    classes = ["wide" if h in wide else esc(str(h).split()[0]) if str(h).split() else "" for h in headers]
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{c}">{esc(cell)}</td>' for c, cell in zip(classes, row))
                   + "</tr>\n" for row in rows)
    ident = f' id="{esc(name)}"' if name else ""
    return f"<table{ident}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _notes_html(notes: list) -> str:
    if not notes:
        return ""
    return "<h2>Notes</h2>\n<ul>" + "".join(f'<li class="note">{esc(n)}</li>' for n in notes) + "</ul>\n"


def _table_section(rows: list[VersionRow]) -> str:
    if not rows:
        return "<h2>Versions</h2>\n<p>No versions in the ledger yet: <code>lorakit push</code> records them.</p>\n"
    shared = shared_changes(rows)
    caption = (f'<p class="caption">Every version changes alike: {esc(changes_text(shared))}. The changes column '
               "shows what tells them apart.</p>\n" if shared else "")
    cells = [table_cells(r, wide=True) for r in rows]  # whole: a page wraps them
    return "<h2>Versions</h2>\n" + html_table(list(TABLE_HEADERS), cells, "versions") + caption


def _seed_groups_section(rows: list[VersionRow]) -> str:
    """The seed groups (versions that differ only in seed) with the mean and spread of their measures."""
    groups = seed_groups(rows)
    if not groups:
        return ""
    cells = [[g.label, ", ".join(str(s) for s in g.seeds), changes_text(g.changes, 24) or "-", figures_text(g.val),
              figures_text(g.public, 5), figures_text(g.private, 5)] for g in groups]
    return ("<h2>Seed groups</h2>\n<p class=\"caption\">Versions that differ only in seed: mean ± standard deviation "
            "over the seeds (n: the runs that have the measure). <code>lorakit compare --seeds A B</code> pairs "
            "two groups seed by seed.</p>\n"
            + html_table(["versions", "seeds", "changes", "val_acc", "public", "private"], cells, "seed-groups"))


def _config_section(rows: list[VersionRow], chosen: list) -> str:
    """The config keys whose values differ among the chosen versions, one column each."""
    mine = [r for r in rows if r.version in chosen and r.config is not None]
    if len(mine) < 2:
        return ""
    keys = sorted({k for r in mine for k in r.config if any(o.config.get(k) != r.config.get(k) for o in mine)})
    cells = [[k, *(value_text(r.config.get(k)) for r in mine)] for k in keys]
    return ("<h2>Config of the chosen versions</h2>\n<p class=\"caption\">Only the keys whose values differ.</p>\n"
            + (html_table(["key", *(f"v{r.version}" for r in mine)], cells, "config-diff", wide=("key",)) if cells
               else "<p>They ran the same config.</p>\n"))


def _sweeps_section(project: Project, notes: list) -> str:
    """Each recorded sweep's arms ranked by validation accuracy, with the paired tests against the best."""
    parts = []
    for sweep in sweeps_recorded(project, notes):
        ranked = sweep_rank(project, sweep)
        if not any(r.versions for r in ranked):
            continue
        headers, cells, caption = ranked_table(sweep, ranked)
        noise = ranked_noise(ranked)
        parts.append(f"<h3>Sweep {esc(sweep.id)} ({esc(sweep.created_at)}; shared: {esc(' '.join(sweep.shared) or '-')})"
                     "</h3>\n" + html_table(headers, cells, sweep.id, ("vs best",))
                     + f'<p class="caption">{esc(caption)}' + (f"<br>Noise: {esc(noise)}" if noise else "") + "</p>\n")
    return "<h2>Sweeps</h2>\n" + "".join(parts) if parts else ""


# ---------------------------------------------------------------------------------------------- sections
def _history(run: PulledRun, key: str) -> tuple:
    """(epoch, value, tooltip) of ``key`` in each epoch of metrics.json's history that records it."""
    history = (run.metrics or {}).get("history")
    points = []
    for i, entry in enumerate(history if isinstance(history, list) else []):
        value = finite_number(entry.get(key)) if isinstance(entry, dict) else None
        epoch = finite_number(entry.get("epoch"), i + 1) if isinstance(entry, dict) else None
        if value is not None and epoch is not None:
            points.append((epoch, value, f"v{run.version} epoch {epoch:g}: {key} {value:.4f}"))
    return tuple(points)


def _curves_section(runs: list[PulledRun], notes: list) -> str:
    """Validation accuracy by epoch, overlaid; train (solid, circles) and validation (dashed, squares) loss when
    recorded. A run of one epoch is a marker with its name beside it."""
    accuracy, loss = [], []
    for i, run in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        accuracy.append(Series(f"v{run.version}", _history(run, "val_accuracy"), color))
        loss.append(Series(f"v{run.version} train", _history(run, "train_loss"), color))
        loss.append(Series(f"v{run.version} val", _history(run, "val_loss"), color, dashed=True))
        if run.metrics is not None and not accuracy[-1].points:
            notes.append(f"v{run.version}: metrics.json has no validation history")
    accuracy, loss = [s for s in accuracy if s.points], [s for s in loss if s.points]
    if not accuracy:
        return "<h2>Validation curves</h2>\n<p>No validation history in the chosen versions.</p>\n"
    text = "<h2>Validation curves</h2>\n" + line_chart("val_accuracy", "Validation accuracy by epoch", accuracy,
                                                        "epoch", "accuracy", _epoch_ticks(accuracy))
    if loss:
        text += line_chart("loss", "Loss by epoch (train: solid, circles; validation: dashed, squares)", loss,
                           "epoch", "loss", _epoch_ticks(loss))
    return text


LOSS_POINTS_MAX = 20_000  # metrics.json's loss_curve holds at most this many points: more is not read


def loss_curve_of(run: PulledRun) -> tuple:
    """(epoch, loss, tooltip) of each point of metrics.json's loss_curve ({"step", "epoch", "loss"}: the mean
    training loss since the point before), read as untrusted input: finite numbers, at most LOSS_POINTS_MAX."""
    curve = (run.metrics or {}).get("loss_curve")
    points = []
    for entry in curve[:LOSS_POINTS_MAX] if isinstance(curve, list) else []:
        if not isinstance(entry, dict):
            continue
        step, epoch, loss = (finite_number(entry.get(k)) for k in ("step", "epoch", "loss"))
        if step is not None and epoch is not None and loss is not None and epoch >= 0:
            points.append((epoch, loss, f"v{run.version} step {int(step)} (epoch {epoch:.2f}): loss {loss:.4f}"))
    return tuple(sorted(points))


def _loss_steps_section(runs: list[PulledRun]) -> str:
    """The training loss per step of each run (a point every few dozen optimizer steps), by fractional epoch."""
    series = [Series(f"v{run.version}", points, PALETTE[i % len(PALETTE)]) for i, run in enumerate(runs)
              if (points := loss_curve_of(run))]
    if not series:
        return ""
    return ("<h2>Training loss per step</h2>\n"
            + line_chart("loss_steps", "Training loss per step (the mean since the point before)", series,
                         "epoch (steps in the tooltips)", "training loss", number_ticks))


def _epoch_ticks(series: list) -> list:
    epochs = sorted({p[0] for s in series for p in s.points})
    step = max(1, len(epochs) // 10)
    return [(e, f"{e:g}") for e in epochs[::step]]


def confusion_of(run: PulledRun) -> Optional[np.ndarray]:
    """Validation counts of ``run``: true label by row, predicted label by column; None without predictions."""
    if run.val is None:
        return None
    classes = len(LABELS)
    labels, predicted = run.val.labels, run.val.predicted
    valid = (labels >= 0) & (labels < classes) & (predicted >= 0) & (predicted < classes)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels[valid], predicted[valid]), 1)
    return matrix


def _confusion_section(runs: list[PulledRun]) -> str:
    figures = [confusion_svg(run.version, matrix) for run in runs
               if (matrix := confusion_of(run)) is not None]
    if not figures:
        return "<h2>Confusion matrices</h2>\n<p>No validation predictions in the chosen versions.</p>\n"
    return ("<h2>Confusion matrices</h2>\n<p>Validation rows: true class by row, predicted class by column; the "
            "shade is the row's share.</p>\n" + "".join(figures))


def _moment(text: str) -> Optional[float]:
    """Hours since the epoch of an ISO 8601 time (UTC when it names no zone); None when it is none. Hours, so
    that submissions minutes apart still spread over the chart's least span of one."""
    try:
        moment = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() / 3600


def _scores_section(rows: list[VersionRow]) -> str:
    """Public and private scores of each version's (last) submission by when it was submitted, each point
    labelled by its version (public above, private below)."""
    public, private = [], []
    for row in rows:
        moment = _moment(row.submitted_at) if row.version is not None else None
        if moment is None:
            continue
        for points, score, which in ((public, row.public_score, "public"), (private, row.private_score, "private")):
            if score is not None:
                points.append((moment, score, f"v{row.version} {which} {score:.5f} ({row.submitted_at})",
                               f"v{row.version}"))
    series = [Series(name, tuple(p[:3] for p in sorted(points)), color, dashed=name == "private",
                     tags=tuple(p[3] for p in sorted(points)), tag_below=name == "private")
              for name, points, color in (("public", public, PALETTE[0]), ("private", private, PALETTE[1])) if points]
    if not series:
        return "<h2>Scores over time</h2>\n<p>No scored submissions in the ledger yet.</p>\n"
    return "<h2>Scores over time</h2>\n" + line_chart("scores", "Leaderboard scores by submission time", series,
                                                       "submitted (UTC)", "score", time_ticks)


# ------------------------------------------------------------------------------------- the command line
@command(
    "report",
    "write one self-contained HTML file: the versions table with its seed groups, the config keys that differ, "
    "validation curves, training loss per step, confusion matrices, scores over time and each sweep's ranking "
    "(offline, from the ledger, the pulled folders and the sweep records)",
    flag("--out", dest="out_path", metavar="PATH", help="where to write it (default submissions/report.html)"),
    flag("--versions", metavar="N,M", help="whose curves and confusion matrices to show, e.g. 3,5,7 "
                                           "(default: the newest 8 pulled versions)"),
    flag("--open", action="store_true", help="then open it in the default web browser"),
    JSON,
)
def cmd_report(args) -> int:
    import webbrowser


    project = project_of(args)
    path = report_path_check(project, args.out_path)
    report = report_make(project, path, versions_parse(args.versions))
    for line in report.notes:
        note(line)
    args.out.document(report.as_json())
    shown = ", ".join(f"v{v}" for v in report.versions) or "no pulled version"
    where = path.resolve().relative_to(project.root) if path.resolve().is_relative_to(project.root) else path
    args.out.result(f"wrote {where} ({report.charts} charts; curves of {shown})")
    if args.open and not webbrowser.open(path.resolve().as_uri()):
        warn(f"no web browser could be started: open {path} by hand")
    return 0
