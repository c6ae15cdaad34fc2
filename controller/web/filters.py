"""Jinja filters: times (UTC, with machine-readable <time> elements), durations, values, diffs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape

from controller.storage.serialize import rfc3339


def ts(value: dt.datetime | None) -> Markup:
    if value is None:
        return Markup("&mdash;")
    utc = value.astimezone(dt.UTC)
    return Markup('<time datetime="{}">{}</time>').format(rfc3339(utc), f"{utc:%Y-%m-%d %H:%M:%S} UTC")


def duration(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s < 600 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def ago(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return "never"
    delta = (now - value).total_seconds()
    return "just now" if 0 <= delta < 5 else (f"{duration(delta)} ago" if delta >= 0 else f"in {duration(delta)}")


def countdown(value: dt.datetime | None, now: dt.datetime) -> Markup:
    """A deadline that vigil.js keeps counting: "due in 12 min" / "overdue by 3 min"."""
    if value is None:
        return Markup("&mdash;")
    delta = (value - now).total_seconds()
    text = f"due in {duration(delta)}" if delta >= 0 else f"overdue by {duration(delta)}"
    cls = "countdown" + (" overdue" if delta < 0 else "")
    return Markup('<time class="{}" data-countdown datetime="{}">{}</time>').format(cls, rfc3339(value), text)


def show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def diff_lines(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            cls = "d-file"
        elif line.startswith("@@"):
            cls = "d-hunk"
        elif line.startswith("+"):
            cls = "d-add"
        elif line.startswith("-"):
            cls = "d-del"
        else:
            cls = "d-ctx"
        out.append((cls, line))
    return out


def label(value: str | None) -> str:
    return (value or "").replace("_", " ")


def install(env: Environment) -> None:
    env.filters.update(ts=ts, ago=ago, countdown=countdown, show=show, diff_lines=diff_lines, label=label,
                       escape=escape)
