from __future__ import annotations

import json
import random
import string

import pytest

from vidseek.indexer.parse import parse_events, parse_time


def test_well_formed_answer_is_clamped_to_the_window():
    text = json.dumps(
        {
            "events": [
                {"start": 3595.0, "end": 3605.5, "description": "  A man  opens a door. "},
                {"start": 3650, "end": 3700, "description": "He sits down."},
            ]
        }
    )
    r = parse_events(text, 3600.0, 3660.0)
    assert r.error is None and r.dropped == []
    assert [(e.start_seconds, e.end_seconds, e.description) for e in r.events] == [
        (3600.0, 3605.5, "A man opens a door."),
        (3650.0, 3660.0, "He sits down."),
    ]


@pytest.mark.parametrize(
    "wrapper", ["```json\n{}\n```", "Sure! Here you go:\n{}\nHope that helps.", "{}"]
)
def test_json_inside_prose_or_fences(wrapper: str):
    body = json.dumps({"events": [{"start": 1, "end": 2, "description": "x"}]})
    r = parse_events(wrapper.replace("{}", body), 0, 10)
    assert [e.description for e in r.events] == ["x"]


def test_alternative_shapes_and_clock_strings():
    text = json.dumps(
        [
            {"start_time": "01:00:05", "end_time": "01:00:07.5", "caption": "a"},
            {"timestamp": ["00:10", "00:12"], "sentence": "b"},
            {"start": "12.5s", "end": "14 seconds", "text": "c"},
        ]
    )
    r = parse_events(text, 0, 7200)
    assert [(e.start_seconds, e.end_seconds, e.description) for e in r.events] == [
        (3605.0, 3607.5, "a"),
        (10.0, 12.0, "b"),
        (12.5, 14.0, "c"),
    ]


def test_bad_events_are_dropped_with_reasons():
    text = json.dumps(
        {
            "events": [
                {"start": 5, "end": 4, "description": "backwards"},
                {"start": 1, "end": 2},
                {"start": "soon", "end": 2, "description": "x"},
                {"start": 100, "end": 120, "description": "outside"},
                "not an object",
                {"start": 1, "end": 3, "description": "kept"},
            ]
        }
    )
    r = parse_events(text, 0, 60)
    assert [e.description for e in r.events] == ["kept"]
    assert len(r.dropped) == 5
    assert any("end 4 < start 5" in d for d in r.dropped)
    assert any("missing description" in d for d in r.dropped)
    assert any("outside the window" in d for d in r.dropped)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "the the the",
        "{",
        "[1, 2",
        '{"events": 3}',
        "null",
        '{"events": [{"start": NaN, "end": 1, "description": "x"}]}',
    ],
)
def test_garbage_gives_an_error_or_nothing_never_an_exception(text: str):
    r = parse_events(text, 0, 10)
    assert r.events == []
    assert r.error is not None or r.dropped


def test_random_strings_never_raise():
    rng = random.Random(1234)
    alphabet = string.printable + '{}[]":,'
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        r = parse_events(text, 0.0, 10.0)
        for e in r.events:
            assert 0.0 <= e.start_seconds < e.end_seconds <= 10.0


def test_parse_time():
    assert parse_time(5) == 5.0
    assert parse_time("1:02:03.5") == 3723.5
    assert parse_time("02:03") == 123.0
    assert parse_time(True) is None
    assert parse_time(float("inf")) is None
    assert parse_time("abc") is None


# --- more shapes and failure modes ----------------------------------------------------


def _one(text: str, start: float = 0.0, end: float = 100.0):
    r = parse_events(text, start, end)
    return r, [(e.start_seconds, e.end_seconds, e.description) for e in r.events]


def test_constrained_decoder_output_parses_exactly():
    text = (
        '{"events": [{"start": 3600.5, "end": 3602.25, "description": "A man opens a red door."}]}'
    )
    r, events = _one(text, 3600.0, 3660.0)
    assert r.error is None and r.dropped == []
    assert events == [(3600.5, 3602.25, "A man opens a red door.")]


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"events": [{"start": 1, "end": 2, "description": "x"}]}',  # fence never closed
        '```\n[{"start": 1, "end": 2, "description": "x"}]\n```',
        '```JSON {"events": [{"start": 1, "end": 2, "description": "x"}]} ```',
        'Events: [{"start": 1, "end": 2, "description": "x"}] -- done',
        '{"start": 1, "end": 2, "description": "x"}',  # a single event
        '{"results": [{"start": 1, "end": 2, "description": "x"}]}',
        '\ufeff  {"events": [{"start": "1", "end": "2", "description": "x"}]}  ',
    ],
)
def test_more_wrappers_and_shapes(text: str):
    _, events = _one(text)
    assert events == [(1.0, 2.0, "x")]


def test_answer_cut_short_keeps_its_complete_events():
    text = (
        '{"events": [{"start": 1, "end": 2, "description": "first"}, '
        '{"start": 3, "end": 4, "description": "second"}, {"start": 5, "end": 6, "descr'
    )
    r, events = _one(text)
    assert events == [(1.0, 2.0, "first"), (3.0, 4.0, "second")]
    assert r.error is not None and "salvaged 2" in r.error


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (12, 12.0),
        (12.25, 12.25),
        ("12", 12.0),
        (" 12.5 ", 12.5),
        ("12.5s", 12.5),
        ("12.5 sec", 12.5),
        ("7 seconds", 7.0),
        ("1:05", 65.0),
        ("01:05.5", 65.5),
        ("90:00", 5400.0),
        ("1:00:00", 3600.0),
        ("2:03:04.25", 7384.25),
        ("-3", -3.0),
        (".5", 0.5),
        ("1:60", None),
        ("1:75:00", None),
        ("1:2:3:4", None),
        ("12.5.3", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        (float("nan"), None),
        (10**400, None),
        (None, None),
        ([1], None),
        ({"s": 1}, None),
        (False, None),
    ],
)
def test_parse_time_cases(value, seconds):
    assert parse_time(value) == seconds


def test_clamping_and_spans():
    text = json.dumps(
        [
            {"start": -5, "end": 3, "description": "starts before"},
            {"start": 95, "end": 200, "description": "ends after"},
            {"start": -10, "end": 500, "description": "covers all"},
            {"start": 100, "end": 120, "description": "after the window"},
            {"start": -20, "end": 0, "description": "before the window"},
            {"start": 50, "end": 50, "description": "zero length"},
        ]
    )
    r, events = _one(text)
    assert events == [
        (0.0, 3.0, "starts before"),
        (95.0, 100.0, "ends after"),
        (0.0, 100.0, "covers all"),
    ]
    assert len(r.dropped) == 3
    assert sum("outside the window" in d for d in r.dropped) == 2
    assert any("zero-length" in d for d in r.dropped)


def test_descriptions_are_cleaned_and_checked():
    text = json.dumps(
        [
            {"start": 1, "end": 2, "description": "\n\t padded \n text \t"},
            {"start": 1, "end": 2, "description": "   "},
            {"start": 1, "end": 2, "description": 42},
            {"start": 1, "end": 2, "description": None},
            {"start": 1, "end": 2, "description": "y" * 5000},
        ]
    )
    r, events = _one(text)
    assert [e[2] for e in events] == ["padded text", "y" * 1000]
    assert len(r.dropped) == 3
    assert all(d.startswith("event ") for d in r.dropped)


def test_reasons_name_the_event_and_the_problem():
    text = json.dumps(
        {
            "events": [
                {"end": 2, "description": "no start"},
                {"start": 1, "description": "no end"},
                {"start": "later", "end": 2, "description": "x"},
                {"start": 1, "end": [2], "description": "x"},
                {"start": float("inf"), "end": 2, "description": "x"},
            ]
        }
    )
    r = parse_events(text, 0, 10)
    assert r.events == [] and r.error is None
    assert r.dropped[0] == "event 1: missing start"
    assert r.dropped[1] == "event 2: missing end"
    assert r.dropped[2].startswith("event 3: unreadable start")
    assert r.dropped[3].startswith("event 4: unreadable end")
    assert r.dropped[4].startswith("event 5: unreadable start")


def test_other_scalar_fields_are_kept_as_extra():
    text = json.dumps(
        [
            {
                "start": 1,
                "end": 2,
                "description": "x",
                "speaker": "Ann",
                "confidence": 0.9,
                "tags": ["a"],
            }
        ]
    )
    (event,) = parse_events(text, 0, 10).events
    assert event.extra == {"speaker": "Ann", "confidence": "0.9"}


@pytest.mark.parametrize(
    ("start", "end"), [(10.0, 10.0), (10.0, 5.0), (float("nan"), 1.0), (0.0, float("inf"))]
)
def test_an_invalid_window_is_an_error_not_an_exception(start: float, end: float):
    r = parse_events('{"events": [{"start": 1, "end": 2, "description": "x"}]}', start, end)
    assert r.events == [] and r.error is not None


def test_pathological_inputs_never_raise():
    deep = "[" * 100_000 + "]" * 100_000
    for text in [deep, "{" * 50_000, '{"events": ' + deep + "}", "\x00\x01\ud800", "```", "``````"]:
        r = parse_events(text, 0.0, 10.0)
        assert r.events == []
        assert r.error is not None or r.dropped is not None


def _random_json(rng: random.Random, depth: int = 0):
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return rng.uniform(-50, 50)
    if choice == 1:
        return rng.randint(-5, 20)
    if choice == 2:
        return "".join(rng.choice("0123456789:. sabc") for _ in range(rng.randint(0, 8)))
    if choice == 3:
        return None
    if choice == 4:
        return rng.choice([True, False])
    if choice == 5:
        return rng.choice([float("nan"), float("inf"), 1e308, -0.0])
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["start", "end", "description", "start_time", "end_time", "events", "timestamp", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_random_json_structures_never_raise():
    rng = random.Random(99)
    for _ in range(3000):
        value = _random_json(rng)
        text = json.dumps(value) if rng.random() < 0.8 else json.dumps(value)[: rng.randint(0, 60)]
        r = parse_events(text, 0.0, 10.0)
        assert isinstance(r.dropped, list)
        for e in r.events:
            assert 0.0 <= e.start_seconds < e.end_seconds <= 10.0
            assert e.description and e.description == e.description.strip()


def test_arbitrary_unicode_never_raises():
    rng = random.Random(7)
    for _ in range(1000):
        text = "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 40)))
        parse_events(text, 0.0, 10.0)
        parse_events('{"events": [' + text, 0.0, 10.0)


def test_bracketed_prose_before_the_answer_is_skipped():
    text = 'Step [1] of [2]: done. {"events": [{"start": 1, "end": 2, "description": "x"}]}'
    r, events = _one(text)
    assert events == [(1.0, 2.0, "x")] and r.error is None


def test_qwen_timestamp_span_shape_is_salvaged_too():
    text = '[{"timestamp": [1, 2], "caption": "a"}, {"timestamp": [3, 4], "caption": "b"}, {"ti'
    r, events = _one(text)
    assert events == [(1.0, 2.0, "a"), (3.0, 4.0, "b")]
    assert r.error is not None and "salvaged 2" in r.error
