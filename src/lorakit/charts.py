"""The report's charts: inline SVG drawn by hand (no script, no font or stylesheet from elsewhere), every text
escaped with html.escape: line charts with a legend and tooltips, and a confusion matrix.

A series is a line with a marker at each point (a circle, or a hollow square for the dashed kind), and its
legend entry shows both, so that a series of one point (a run of one epoch) reads as well as a line: its
marker carries its name beside it. A series of many points (a loss curve) is a line alone, thinned to what the
chart can show."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Union

import numpy as np

from lorakit.common import LABELS

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
WIDTH, HEIGHT = 680, 320
MARGIN = {"left": 64, "right": 180, "top": 34, "bottom": 48}  # the right margin holds the legend


def esc(value) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple  # (x, y, tooltip)
    color: str
    dashed: bool = False  # a dashed line and hollow square markers; else solid with filled circles
    tags: tuple = ()  # a short text beside each point (the version of a score), or none
    tag_below: bool = False  # tags under the points (two series of tags at one x: one above, one below)


MARKERS_MAX = 60  # a series with more points is a line alone (a loss curve): markers would hide it
LINE_POINTS_MAX = 400  # the points a line keeps at most: more than the plot's pixels can tell apart


def confusion_svg(version: int, matrix: np.ndarray) -> str:
    cell, left, top = 58, 78, 60
    size = len(LABELS)
    width, height = left + cell * size + 10, top + cell * size + 10
    parts = [f'<figure><svg class="chart" data-chart="confusion" data-version="{version}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="v{version} confusion matrix">',
             f'<text x="{left}" y="14" font-weight="bold">v{version}: {int(matrix.sum())} validation rows</text>',
             f'<text x="{left + cell * size / 2}" y="34" text-anchor="middle">predicted</text>']
    for j, name in enumerate(LABELS):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" text-anchor="middle">{esc(name)}</text>')
    for i, name in enumerate(LABELS):
        total = max(1, int(matrix[i].sum()))
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{esc(name)}</text>')
        for j in range(size):
            share = matrix[i, j] / total
            tip = f"true {LABELS[i]}, predicted {LABELS[j]}: {int(matrix[i, j])} ({share:.1%} of the row)"
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" fill="#1f77b4" '
                         f'fill-opacity="{0.08 + 0.85 * share:.3f}" stroke="#fff"><title>{esc(tip)}</title></rect>')
            parts.append(f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle">'
                         f'{int(matrix[i, j])}</text>')
    parts.append("</svg></figure>\n")
    return "".join(parts)


def _span(values: list, least: float) -> tuple:
    """The axis range of ``values``: at least ``least`` wide, with 5% to spare on each side."""
    lo, hi = min(values), max(values)
    if hi - lo < least:
        middle = (lo + hi) / 2
        lo, hi = middle - least / 2, middle + least / 2
    spare = (hi - lo) * 0.05
    return lo - spare, hi + spare


def _ticks(lo: float, hi: float) -> list:
    """About five round values between ``lo`` and ``hi``."""
    raw = (hi - lo) / 5
    magnitude = 10 ** np.floor(np.log10(raw))
    step = magnitude * next(k for k in (1, 2, 5, 10) if k * magnitude >= raw)
    first = np.ceil(lo / step) * step
    return [float(first + k * step) for k in range(int((hi - first) / step) + 1)]


PLOT_W = WIDTH - MARGIN["left"] - MARGIN["right"]
PLOT_H = HEIGHT - MARGIN["top"] - MARGIN["bottom"]


@dataclass(frozen=True)
class Frame:
    """The data ranges a chart's plot area shows, and where a value lands in it."""

    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float) -> float:
        return round(MARGIN["left"] + (x - self.x0) / (self.x1 - self.x0) * PLOT_W, 1)

    def py(self, y: float) -> float:
        return round(MARGIN["top"] + (self.y1 - y) / (self.y1 - self.y0) * PLOT_H, 1)


def line_chart(name: str, title: str, series: list, x_label: str, y_label: str,
               x_ticks: Union[list, Callable]) -> str:
    """An SVG line chart of ``series`` with a legend on the right; each point's tooltip is its <title>.
    ``x_ticks``: (x, label) pairs, or a function of the x axis' range that returns them."""
    frame = Frame(*_span([p[0] for s in series for p in s.points], 1.0),
                  *_span([p[1] for s in series for p in s.points], 0.01))
    ticks = x_ticks(frame.x0, frame.x1) if callable(x_ticks) else x_ticks
    parts = [f'<svg class="chart" data-chart="{name}" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(title)}">',
             f'<text x="{MARGIN["left"]}" y="18" font-weight="bold">{esc(title)}</text>',
             f'<rect x="{MARGIN["left"]}" y="{MARGIN["top"]}" width="{PLOT_W}" height="{PLOT_H}" fill="none" '
             'stroke="#999"/>', *_axes(frame, ticks, x_label, y_label)]
    for s in series:
        parts += _series_svg(frame, s)
    parts += _single_labels(frame, series)
    parts += [_legend_entry(k, s) for k, s in enumerate(series)]
    parts.append("</svg>\n")
    return "".join(parts)


def _series_svg(frame: Frame, s: Series) -> list:
    """A series' line (thinned to LINE_POINTS_MAX), its markers with their tooltips (up to MARKERS_MAX points)
    and its tags."""
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    parts = []
    if len(s.points) > 1:
        step = max(1, -(-len(s.points) // LINE_POINTS_MAX))
        kept = [*s.points[::step], *([s.points[-1]] if (len(s.points) - 1) % step else [])]
        line = " ".join(f"{frame.px(x)},{frame.py(y)}" for x, y, _tip in kept)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{s.color}" stroke-width="2"{dash}>'
                     f"<title>{esc(s.label)}</title></polyline>")
    if len(s.points) <= MARKERS_MAX:
        parts += [marker(frame.px(x), frame.py(y), s, tip) for x, y, tip in s.points]
    for (x, y, _tip), tag in zip(s.points, s.tags):
        dy = 15 if s.tag_below else -8
        parts.append(f'<text class="tag" x="{frame.px(x)}" y="{frame.py(y) + dy}" text-anchor="middle" '
                     f'fill="{s.color}">{esc(tag)}</text>')
    return parts


def marker(x: float, y: float, s: Series, tip: str = "", size: float = 3.5) -> str:
    """A series' marker at (x, y): a filled circle, or a hollow square for a dashed series."""
    title = f"<title>{esc(tip)}</title>" if tip else ""
    if s.dashed:
        return (f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size}" height="{2 * size}" fill="#fff" '
                f'stroke="{s.color}" stroke-width="2">{title}</rect>')
    return f'<circle cx="{x}" cy="{y}" r="{size}" fill="{s.color}">{title}</circle>'


def _single_labels(frame: Frame, series: list) -> list:
    """The names of the one-point series beside their markers (a run of one epoch has no line to follow); the
    names of series whose points fall on one spot share one label."""
    spots: dict = {}
    for s in series:
        if len(s.points) == 1 and not s.tags:
            x, y, _tip = s.points[0]
            spots.setdefault((frame.px(x), frame.py(y)), []).append(s.label)
    return [f'<text class="point-label" x="{x + 8}" y="{y - 6}">{esc(", ".join(labels))}</text>'
            for (x, y), labels in spots.items()]


def _legend_entry(k: int, s: Series) -> str:
    """The legend's line k: the series' line and marker, as the series is drawn, and its name."""
    lx, ly = WIDTH - MARGIN["right"] + 12, MARGIN["top"] + 10 + 16 * k
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    shown = marker(lx + 13, ly, s) if len(s.points) <= MARKERS_MAX else ""  # as the series is drawn
    return (f'<g class="legend"><line x1="{lx}" y1="{ly}" x2="{lx + 26}" y2="{ly}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/>{shown}<text x="{lx + 32}" y="{ly + 4}">{esc(s.label[:24])}</text></g>')


def number_ticks(lo: float, hi: float) -> list:
    """About five round ticks of a numeric axis, labelled as short as they go."""
    return [(x, f"{x:g}") for x in _ticks(lo, hi)]


TIME_STEPS_H = (1 / 60, 2 / 60, 5 / 60, 10 / 60, 0.25, 0.5, 1, 2, 3, 6, 12, 24, 48, 168, 336, 720)


def time_ticks(lo: float, hi: float) -> list:
    """At most five ticks of a time axis (hours since the epoch, UTC) at a round step, each labelled once: the
    time, and the date under the first and wherever the day changes ("14:05" over "Apr 20"); whole days for
    spans of days."""
    step = next((s for s in TIME_STEPS_H if (hi - lo) / s <= 5), TIME_STEPS_H[-1])
    first = -(-lo // step) * step
    ticks, day = [], None
    for k in range(int((hi - first) // step) + 1):
        moment = datetime.fromtimestamp((first + k * step) * 3600, timezone.utc)
        date = moment.strftime("%b %d")
        label = date if step >= 24 else moment.strftime("%H:%M") + ("\n" + date if date != day else "")
        ticks.append((first + k * step, label))
        day = date
    return ticks


def _axes(frame: Frame, x_ticks: list, x_label: str, y_label: str) -> list:
    """Tick marks and labels of both axes, and the axis titles."""
    left, bottom, middle = MARGIN["left"], MARGIN["top"] + PLOT_H, MARGIN["top"] + PLOT_H / 2
    parts = []
    for x, label in x_ticks:
        px = frame.px(x)
        lines = "".join(f'<tspan x="{px}" dy="{0 if i == 0 else 13}">{esc(text)}</tspan>'
                        for i, text in enumerate(label.split("\n")))
        parts.append(f'<line x1="{px}" y1="{bottom}" x2="{px}" y2="{bottom + 4}" stroke="#999"/>'
                     f'<text x="{px}" y="{bottom + 16}" text-anchor="middle">{lines}</text>')
    for y in _ticks(frame.y0, frame.y1):
        py = frame.py(y)
        parts.append(f'<line x1="{left - 4}" y1="{py}" x2="{left}" y2="{py}" stroke="#999"/>'
                     f'<text x="{left - 7}" y="{py + 4}" text-anchor="end">{y:.4g}</text>')
    parts.append(f'<text x="{left + PLOT_W / 2}" y="{HEIGHT - 10}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">'
                 f"{esc(y_label)}</text>")
    return parts

