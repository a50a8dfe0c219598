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
