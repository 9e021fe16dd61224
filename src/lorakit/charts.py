"""The report's charts: inline SVG drawn by hand (no script, no font or stylesheet from elsewhere), every text
escaped with html.escape: line charts with a legend and tooltips, and a confusion matrix."""

from __future__ import annotations

import html
from dataclasses import dataclass

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
    dashed: bool = False


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


def line_chart(name: str, title: str, series: list, x_label: str, y_label: str, x_ticks: list) -> str:
    """An SVG line chart of ``series`` with a legend on the right; each point's tooltip is its <title>."""
    frame = Frame(*_span([p[0] for s in series for p in s.points], 1.0),
                  *_span([p[1] for s in series for p in s.points], 0.01))
    parts = [f'<svg class="chart" data-chart="{name}" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(title)}">',
             f'<text x="{MARGIN["left"]}" y="18" font-weight="bold">{esc(title)}</text>',
             f'<rect x="{MARGIN["left"]}" y="{MARGIN["top"]}" width="{PLOT_W}" height="{PLOT_H}" fill="none" '
             'stroke="#999"/>', *_axes(frame, x_ticks, x_label, y_label)]
    for k, s in enumerate(series):
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        line = " ".join(f"{frame.px(x)},{frame.py(y)}" for x, y, _tip in s.points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        parts += [f'<circle cx="{frame.px(x)}" cy="{frame.py(y)}" r="3" fill="{s.color}"><title>{esc(tip)}</title>'
                  "</circle>" for x, y, tip in s.points]
        lx, ly = WIDTH - MARGIN["right"] + 12, MARGIN["top"] + 10 + 16 * k
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{s.color}" stroke-width="2"{dash}/>'
                     f'<text x="{lx + 28}" y="{ly + 4}">{esc(s.label[:24])}</text>')
    parts.append("</svg>\n")
    return "".join(parts)


def _axes(frame: Frame, x_ticks: list, x_label: str, y_label: str) -> list:
    """Tick marks and labels of both axes, and the axis titles."""
    left, bottom, middle = MARGIN["left"], MARGIN["top"] + PLOT_H, MARGIN["top"] + PLOT_H / 2
    parts = []
    for x, label in x_ticks:
        px = frame.px(x)
        parts.append(f'<line x1="{px}" y1="{bottom}" x2="{px}" y2="{bottom + 4}" stroke="#999"/>'
                     f'<text x="{px}" y="{bottom + 16}" text-anchor="middle">{esc(label)}</text>')
    for y in _ticks(frame.y0, frame.y1):
        py = frame.py(y)
        parts.append(f'<line x1="{left - 4}" y1="{py}" x2="{left}" y2="{py}" stroke="#999"/>'
                     f'<text x="{left - 7}" y="{py + 4}" text-anchor="end">{y:.4g}</text>')
    parts.append(f'<text x="{left + PLOT_W / 2}" y="{HEIGHT - 10}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">'
                 f"{esc(y_label)}</text>")
    return parts

