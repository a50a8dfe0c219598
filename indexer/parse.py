"""Defensive parsing of model answers into events clamped to their window.

Model output is untrusted text. :func:`parse_events` never raises: it returns the
events it could read, one reason per event it dropped, and an error message when the
text was not (entirely) valid JSON.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from vidseek.indexer.types import ParsedEvent

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "ParseResult",
    "SpanResult",
    "parse_events",
    "parse_span",
    "parse_time",
]

_START_KEYS = ("start", "start_time", "start_seconds", "begin", "from")
_END_KEYS = ("end", "end_time", "end_seconds", "stop", "to")
_SPAN_KEYS = ("timestamp", "timestamps", "time", "span")
_DESCRIPTION_KEYS = ("description", "caption", "event", "text", "sentence", "summary")
_KNOWN_KEYS = frozenset(_START_KEYS + _END_KEYS + _SPAN_KEYS + _DESCRIPTION_KEYS)
_LIST_KEYS = ("events", "event_list", "results", "segments")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(.*?)(?:```|$)", re.DOTALL)
# 12 / 12.5 / 01:02 / 1:02:03.25, optionally followed by s / sec / seconds.
_TIME = re.compile(
    r"^(?:(?P<h>\d+):)??(?:(?P<m>\d+):)?(?P<s>\d+(?:\.\d*)?|\.\d+)\s*(?:s|sec|secs|seconds?)?$",
    re.IGNORECASE,
)
_OPENER = re.compile(r"[\[{]")
_OPENER_RUN = re.compile(r"[\[{\s]+")
_OBJECT_START = re.compile(r'\{\s*"')
# Bounds the work on pathological text (e.g. 100,000 opening brackets).
_MAX_DECODE_ATTEMPTS = 2000
_MAX_REASON_VALUE = 40
_MAX_EXTRA_VALUE = 500
MAX_DESCRIPTION_CHARS = 1000


@dataclass
class ParseResult:
    """What :func:`parse_events` read from one answer."""

    events: list[ParsedEvent] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    error: str | None = None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REASON_VALUE else text[: _MAX_REASON_VALUE - 3] + "..."


def parse_time(value: Any) -> float | None:
    """A time as seconds: a number, a numeric string, or ``[hh:]mm:ss[.ff]``; None if unreadable.

    Non-finite values and booleans are unreadable.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            return None
        return seconds if math.isfinite(seconds) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    negative = text.startswith("-")
    if negative:
        text = text[1:].strip()
    match = _TIME.match(text)
    if match is None:
        return None
    hours, minutes = match.group("h"), match.group("m")
    if minutes is not None and float(match.group("s")) >= 60:
        return None
    if hours is not None and int(minutes or 0) >= 60:
        return None
    try:
        seconds = float(match.group("s")) + 60 * int(minutes or 0) + 3600 * int(hours or 0)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return -seconds if negative else seconds


def _strip_fences(text: str) -> str:
    match = _FENCE.search(text)
    return match.group(1) if match else text


def _find_events(text: str) -> tuple[list[Any] | None, str | None]:
    """The event list of an answer and the JSON error, if any.

    The whole text as JSON first; else the first JSON value inside it (prose around
    the answer) that holds events. An event object found inside an opening bracket
    that does not decode is taken for a list cut short: None is returned so that the
    caller salvages every complete event object.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        error = f"invalid JSON: {exc}"
    else:
        items = _event_list(value)
        return items, None if items is not None else f"no event list in JSON {type(value).__name__}"
    decoder = json.JSONDecoder()
    unclosed = False
    resume = 0
    for attempt, match in enumerate(_OPENER.finditer(text)):
        if attempt >= _MAX_DECODE_ATTEMPTS:
            break
        if match.start() < resume:
            continue
        try:
            value, end = decoder.raw_decode(text, match.start())
        except RecursionError:
            # Every opener nested in this run is too deep as well.
            unclosed = True
            run = _OPENER_RUN.match(text, match.start())
            resume = run.end() if run is not None else match.end()
            continue
        except ValueError:
            unclosed = True
            continue
        items = _event_list(value)
        if items is None or (isinstance(value, list) and not _may_hold_events(value)):
            resume = end  # some other bracketed text, e.g. "[1]"
            continue
        if unclosed and isinstance(value, dict) and _looks_like_event(value):
            break
        return items, None
    return None, error


def _salvage_objects(text: str) -> list[Any]:
    """Complete JSON objects that look like events, from text that does not parse (cut short)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    for attempt, match in enumerate(_OBJECT_START.finditer(text)):
        if attempt >= _MAX_DECODE_ATTEMPTS:
            break
        if match.start() < position:
            continue
        try:
            value, end = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and _looks_like_event(value):
            found.append(value)
            position = end
    return found


def _looks_like_event(item: dict[Any, Any]) -> bool:
    return any(key in item for key in _START_KEYS + _END_KEYS + _SPAN_KEYS)


def _may_hold_events(items: list[Any]) -> bool:
    return not items or any(isinstance(item, dict) for item in items)


def _event_list(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return list(value[key])
        if _looks_like_event(value):
            return [value]
    return None


def _pick(item: dict[Any, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    for key in keys:
        if key in item:
            return True, item[key]
    return False, None


def _event(
    number: int, item: Any, window_start: float, window_end: float
) -> tuple[ParsedEvent | None, str | None]:
    if not isinstance(item, dict):
        return None, f"event {number}: not an object ({type(item).__name__})"
    has_start, raw_start = _pick(item, _START_KEYS)
    has_end, raw_end = _pick(item, _END_KEYS)
    has_span, span = _pick(item, _SPAN_KEYS)
    if not has_start and not has_end and has_span and isinstance(span, list) and len(span) == 2:
        # {"timestamp": [start, end], ...}, the shape of Qwen's own dense-caption answers.
        (has_start, raw_start), (has_end, raw_end) = (True, span[0]), (True, span[1])
    has_description, raw_description = _pick(item, _DESCRIPTION_KEYS)
    if not has_start:
        return None, f"event {number}: missing start"
    if not has_end:
        return None, f"event {number}: missing end"
    start = parse_time(raw_start)
    if start is None:
        return None, f"event {number}: unreadable start {_short(raw_start)}"
    end = parse_time(raw_end)
    if end is None:
        return None, f"event {number}: unreadable end {_short(raw_end)}"
    if not has_description or raw_description is None:
        return None, f"event {number}: missing description"
    if not isinstance(raw_description, str):
        return None, f"event {number}: description is not a string"
    description = " ".join(raw_description.split())[:MAX_DESCRIPTION_CHARS]
    if not description:
        return None, f"event {number}: empty description"
    if end < start:
        return None, f"event {number}: end {end:g} < start {start:g}"
    clamped_start = min(max(start, window_start), window_end)
    clamped_end = min(max(end, window_start), window_end)
    if clamped_end <= clamped_start:
        if end <= window_start or start >= window_end:
            return None, (
                f"event {number}: [{start:g}, {end:g}] lies outside the window "
                f"[{window_start:g}, {window_end:g}]"
            )
        return None, f"event {number}: zero-length span [{start:g}, {end:g}]"
    extra = {
        str(key): str(value)[:_MAX_EXTRA_VALUE]
        for key, value in item.items()
        if key not in _KNOWN_KEYS and isinstance(value, str | int | float | bool)
    }
    return ParsedEvent(clamped_start, clamped_end, description, extra), None


def _parse(text: str, window_start: float, window_end: float) -> ParseResult:
    if (
        not (math.isfinite(window_start) and math.isfinite(window_end))
        or window_end <= window_start
    ):
        return ParseResult(error=f"invalid window {window_start!r}-{window_end!r}")
    body = _strip_fences(text).strip()
    if not body:
        return ParseResult(error="empty answer")
    items, error = _find_events(body)
    if items is None:
        items = _salvage_objects(body)
        if items:
            error = f"{error}; salvaged {len(items)} complete event object(s)"
    result = ParseResult(error=error)
    for number, item in enumerate(items, start=1):
        event, reason = _event(number, item, window_start, window_end)
        if event is not None:
            result.events.append(event)
        elif reason is not None:
            result.dropped.append(reason)
    return result


def parse_events(text: str, window_start: float, window_end: float) -> ParseResult:
    """Events of a model answer, clamped to ``[window_start, window_end]``; never raises.

    Accepts a JSON object with an ``events`` list (or a bare list, or one event),
    optionally inside a Markdown code fence or surrounded by prose; keys ``start``/
    ``end`` or ``start_time``/``end_time``; times as numbers, numeric strings or
    ``[hh:]mm:ss[.ff]``. Drops (with a reason in ``dropped``) events without a
    readable start, end or non-empty description, with ``end < start``, or with no
    span left after clamping. ``error`` is None when the text was valid JSON; from
    text that is not (e.g. an answer cut short), the complete event objects are
    salvaged and ``error`` says so.
    """
    try:
        return _parse(str(text), float(window_start), float(window_end))
    except Exception as exc:  # untrusted input must never take the indexer down
        return ParseResult(error=f"parser failure: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class SpanResult:
    """What :func:`parse_span` read from a grounding answer: a clamped span, or why none."""

    start_seconds: float | None = None
    end_seconds: float | None = None
    error: str | None = None


def _first_span(text: str) -> tuple[Any, Any] | None:
    """``(start, end)`` raw values of the first span in an answer, or None."""
    decoder = json.JSONDecoder()
    candidates: list[Any] = []
    try:
        candidates.append(json.loads(text))
    except (ValueError, RecursionError):
        for attempt, match in enumerate(_OPENER.finditer(text)):
            if attempt >= _MAX_DECODE_ATTEMPTS:
                break
            try:
                candidates.append(decoder.raw_decode(text, match.start())[0])
            except (ValueError, RecursionError):
                continue
            break
    for value in candidates:
        if isinstance(value, dict) and not _looks_like_event(value):
            items = _event_list(value)  # {"events": [{...}]}: the dense-caption shape
            value = items[0] if items else value
        if isinstance(value, list) and len(value) == 2 and not isinstance(value[0], dict):
            return value[0], value[1]  # [start, end]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0]
        if isinstance(value, dict):
            has_start, start = _pick(value, _START_KEYS)
            has_end, end = _pick(value, _END_KEYS)
            has_span, span = _pick(value, _SPAN_KEYS)
            if (
                not (has_start or has_end)
                and has_span
                and isinstance(span, list)
                and len(span) == 2
            ):
                return span[0], span[1]
            if has_start and has_end:
                return start, end
    return None


def parse_span(text: str, clip_start: float, clip_end: float) -> SpanResult:
    """The span of a grounding answer, clamped to ``[clip_start, clip_end]``; never raises.

    Accepts ``{"start": s, "end": e}`` (the constrained shape), the same with the
    other key spellings :func:`parse_events` knows, ``[s, e]``, or the first event
    of a dense-caption answer, optionally fenced or inside prose. An unreadable
    answer, ``end < start``, or no span left after clamping gives ``error``.
    """
    try:
        lo, hi = float(clip_start), float(clip_end)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            return SpanResult(error=f"invalid clip {clip_start!r}-{clip_end!r}")
        body = _strip_fences(str(text)).strip()
        if not body:
            return SpanResult(error="empty answer")
        raw = _first_span(body)
        if raw is None:
            return SpanResult(error=f"no span in answer {_short(body)}")
        start, end = parse_time(raw[0]), parse_time(raw[1])
        if start is None or end is None:
            return SpanResult(error=f"unreadable span [{_short(raw[0])}, {_short(raw[1])}]")
        if end < start:
            return SpanResult(error=f"end {end:g} < start {start:g}")
        clamped_start, clamped_end = min(max(start, lo), hi), min(max(end, lo), hi)
        if clamped_end <= clamped_start:
            return SpanResult(error=f"no span left of [{start:g}, {end:g}] in [{lo:g}, {hi:g}]")
        return SpanResult(clamped_start, clamped_end)
    except Exception as exc:  # untrusted input must never take search down
        return SpanResult(error=f"parser failure: {type(exc).__name__}: {exc}")
