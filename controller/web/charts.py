"""Small server-rendered SVG charts (no JavaScript, no third-party code; colours come from vigil.css classes,
so the Content-Security-Policy needs no inline styles). Every chart has a <title> and <desc>; the pages put
the same numbers in a table beside it for screen readers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from controller.web.stats import DailyCount

__all__ = ["Series", "bar_chart", "line_chart"]

_W, _H = 640, 220
_L, _R, _T, _B = 44, 12, 12, 30  # margins: room for the axis labels


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # class of the line, e.g. "s-compliance"
    points: Sequence[tuple[dt.datetime, float]]


def _nice_max(value: float) -> float:
    # Multiples of 4, so that the four grid steps fall on whole numbers.
    for step in (4, 8, 12, 20, 40, 60, 100, 200, 400, 1000, 2000, 4000, 10000, 20000, 40000, 100000):
        if value <= step:
            return float(step)
    return float(value)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _frame(uid: str, title: str, desc: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>'
        + "".join(body) + "</svg>"
    )


def _y_axis(y_max: float, unit: str) -> list[str]:
    out = []
    for i in range(5):
        v = y_max * i / 4
        y = _H - _B - (_H - _T - _B) * i / 4
        out.append(f'<line class="grid" x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}{escape(unit)}</text>')
    return out


def line_chart(uid: str, title: str, series: Sequence[Series], y_max: float | None = None, unit: str = "") -> Markup:
    """Lines over time; each series is drawn with its css class; the last point of each is marked."""
    pts = [p for s in series for p in s.points]
    if not pts:
        return _frame(uid, title, "no data yet", [
            f'<text class="axis" x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no data yet</text>'])
    t0 = min(p[0] for p in pts)
    t1 = max(p[0] for p in pts)
    span = max((t1 - t0).total_seconds(), 1.0)
    top = y_max if y_max is not None else _nice_max(max(p[1] for p in pts))

    def xy(t: dt.datetime, v: float) -> tuple[float, float]:
        x = _L + (_W - _L - _R) * ((t - t0).total_seconds() / span if t1 > t0 else 1.0)
        y = _H - _B - (_H - _T - _B) * (min(v, top) / top if top else 0)
        return x, y

    body = _y_axis(top, unit)
    body.append(f'<text class="axis" x="{_L}" y="{_H - 8}">{t0:%m-%d %H:%M}</text>')
    body.append(f'<text class="axis" x="{_W - _R}" y="{_H - 8}" text-anchor="end">{t1:%m-%d %H:%M} UTC</text>')
    desc = []
    for s in series:
        if not s.points:
            continue
        coords = [xy(t, v) for t, v in s.points]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        body.append(f'<polyline class="line {escape(s.css)}" points="{path}"/>')
        lx, ly = coords[-1]
        body.append(f'<circle class="dot {escape(s.css)}" cx="{lx:.1f}" cy="{ly:.1f}" r="3.5"/>')
        desc.append(f"{s.name}: now {_fmt(s.points[-1][1])}{unit}")
    return _frame(uid, title, "; ".join(desc), body)


def bar_chart(uid: str, title: str, days: Sequence[DailyCount]) -> Markup:
    """Tickets opened and resolved per day, side by side."""
    top = _nice_max(max([d.opened for d in days] + [d.resolved for d in days] + [0]))
    body = _y_axis(top, "")
    n = max(len(days), 1)
    slot = (_W - _L - _R) / n
    bar = max(slot * 0.35, 1.0)
    for i, d in enumerate(days):
        x = _L + i * slot + slot * 0.12
        for j, (value, css) in enumerate(((d.opened, "s-opened"), (d.resolved, "s-resolved"))):
            h = (_H - _T - _B) * value / top
            body.append(f'<rect class="bar {css}" x="{x + j * bar:.1f}" y="{_H - _B - h:.1f}" width="{bar:.1f}" '
                        f'height="{h:.1f}"><title>{d.day:%Y-%m-%d}: {value} '
                        f'{"opened" if j == 0 else "resolved"}</title></rect>')
        if i % max(1, n // 7) == 0 or i == n - 1:
            body.append(f'<text class="axis" x="{x + bar:.1f}" y="{_H - 8}" text-anchor="middle">{d.day:%m-%d}</text>')
    total_o = sum(d.opened for d in days)
    total_r = sum(d.resolved for d in days)
    return _frame(uid, title, f"{total_o} tickets opened and {total_r} resolved in {len(days)} days", body)
