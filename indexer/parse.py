"""Defensive parsing of model output into events.

Model output is untrusted text. ``parse_events`` never raises: it returns the
events it could read (clamped to the window), a reason for each event it
dropped, and an error message when no JSON could be read at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from vidseek.indexer.types import ParsedEvent

__all__ = ["ParseResult", "parse_events", "parse_time"]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_START_KEYS = ("start", "start_time", "start_seconds", "begin", "from")
_END_KEYS = ("end", "end_time", "end_seconds", "stop", "to")
_TEXT_KEYS = ("description", "caption", "event", "text", "sentence")
MAX_DESCRIPTION_CHARS = 1000


@dataclass
class ParseResult:
    events: list[ParsedEvent] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    error: str | None = None


def parse_time(value: Any) -> float | None:
    """Seconds from a number or a "ss", "mm:ss(.ff)", "hh:mm:ss" or "12.5s" string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        t = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().removesuffix("seconds").removesuffix("s").strip()
        m = _CLOCK.match(text)
        try:
            if m:
                hours, minutes, seconds = m.groups()
                t = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
            else:
                t = float(text)
        except ValueError:
            return None
    else:
        return None
    return t if math.isfinite(t) else None


def _candidates(text: str) -> list[str]:
    """Strings that may hold the JSON answer, most likely first."""
    out = [m.group(1) for m in _FENCE.finditer(text)]
    out.append(text)
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            out.append(text[i : j + 1])
    return out


def _load(text: str) -> tuple[Any, str | None]:
    last = "no JSON found in model output"
    for cand in _candidates(text):
        try:
            return json.loads(cand), None
        except (ValueError, RecursionError) as exc:
            last = f"invalid JSON: {exc}"
    return None, last


def _first(item: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in item:
            return item[k]
    return None


def parse_events(text: str, window_start: float, window_end: float) -> ParseResult:
    """Events from a model answer, clamped to [window_start, window_end]; never raises."""
    result = ParseResult()
    data, error = _load(text or "")
    if error is not None:
        result.error = error
        return result
    if isinstance(data, dict):
        items = data.get("events")
        if items is None and any(k in data for k in _START_KEYS):
            items = [data]
    else:
        items = data
    if not isinstance(items, list):
        result.error = "JSON has no list of events"
        return result
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            result.dropped.append(f"event {n}: not an object")
            continue
        span = _first(item, ("timestamp", "timestamps", "time"))
        start_raw, end_raw = _first(item, _START_KEYS), _first(item, _END_KEYS)
        if start_raw is None and isinstance(span, list) and len(span) == 2:
            start_raw, end_raw = span
        start, end = parse_time(start_raw), parse_time(end_raw)
        desc = _first(item, _TEXT_KEYS)
        if start is None or end is None:
            result.dropped.append(f"event {n}: missing or unreadable start/end")
            continue
        if not isinstance(desc, str) or not desc.strip():
            result.dropped.append(f"event {n}: missing description")
            continue
        if end < start:
            result.dropped.append(f"event {n}: end {end:g} < start {start:g}")
            continue
        s, e = max(start, window_start), min(end, window_end)
        if e <= s:
            result.dropped.append(
                f"event {n}: [{start:g}, {end:g}] lies outside the window "
                f"[{window_start:g}, {window_end:g}]"
            )
            continue
        result.events.append(
            ParsedEvent(
                start_seconds=s,
                end_seconds=e,
                description=" ".join(desc.split())[:MAX_DESCRIPTION_CHARS],
            )
        )
    return result
