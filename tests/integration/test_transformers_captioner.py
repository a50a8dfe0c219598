"""The transformers captioner end to end on the tiny random Qwen3-VL (CPU).

A random model's answers are noise: what is tested is that constrained decoding
turns noise into JSON of the events schema that terminates with ``<|im_end|>``, that
an unconstrained run still returns its raw text, and the token accounting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vidseek.indexer import model_inputs
from vidseek.indexer.captioner import Captioner
from vidseek.indexer.captioner_transformers import (
    TransformersCaptioner,
    _DescriptionTracker,
    _EventsLogitsProcessor,
    _grammar,
)
from vidseek.indexer.parse import parse_events
from vidseek.indexer.prompt import EVENTS_JSON_SCHEMA, MAX_DESCRIPTION_CHARS
from vidseek.indexer.types import CaptionOutput, Window, WindowClip

IM_END_ID = 151645


def make_clip(start_second: int, count: int, grey: int, index: int = 0) -> WindowClip:
    """``count`` frames of 32x64 sampled at 1 fps from ``start_second`` of a 2-hour 30 fps video."""
    indices = tuple((start_second + k) * 30 for k in range(count))
    frames = np.full((count, 32, 64, 3), grey, dtype=np.uint8)
    frames[:, :, :32] //= 2  # a little structure
    window = Window(index, float(start_second), float(start_second + count), indices)
    return WindowClip(window=window, frames=frames, fps=30.0, total_frames=216000)


def validate(answer: Any) -> None:
    """EVENTS_JSON_SCHEMA, checked by hand (no jsonschema package here)."""
    spec = EVENTS_JSON_SCHEMA["properties"]["events"]
    assert isinstance(answer, dict) and set(answer) == {"events"}
    assert isinstance(answer["events"], list) and len(answer["events"]) <= spec["maxItems"]
    for event in answer["events"]:
        assert set(event) == {"start", "end", "description"}
        assert all(isinstance(event[key], int | float) for key in ("start", "end"))
        assert isinstance(event["description"], str)
        assert len(event["description"]) <= spec["items"]["properties"]["description"]["maxLength"]


@pytest.fixture(scope="module")
def constrained(tiny_qwen_dir: Path) -> Iterator[TransformersCaptioner]:
    captioner = TransformersCaptioner(
        str(tiny_qwen_dir),
        device="cpu",
        dtype="float32",
        max_new_tokens=model_inputs.max_constrained_output_tokens(),
        constrained_json=True,
        batch_size=2,
    )
    yield captioner
    captioner.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen_dir)


# With this seed the first clip gets one event (its description capped at 200
# characters), the second an empty list: both shapes, in few decoding steps.
CLIPS = (make_clip(3600, 4, 128, index=0), make_clip(5400, 2, 0, index=1))


@pytest.fixture(scope="module")
def batch_outputs(constrained: TransformersCaptioner) -> list[CaptionOutput]:
    return constrained.describe(list(CLIPS))  # batch_size=2: one generate() call


def test_constrained_answers_are_schema_json(
    constrained: TransformersCaptioner, batch_outputs: list[CaptionOutput], tokenizer: Any
) -> None:
    assert isinstance(constrained, Captioner)
    assert len(batch_outputs) == 2
    for clip, output in zip(CLIPS, batch_outputs, strict=True):
        validate(json.loads(output.text))
        # It stopped on <|im_end|>, not on the token budget.
        assert 0 < output.output_tokens < model_inputs.max_constrained_output_tokens()
        # Left padding in the batch is not counted.
        assert output.prompt_tokens == len(model_inputs.prompt_token_ids(tokenizer, clip))
        parsed = parse_events(output.text, clip.window.start_seconds, clip.window.end_seconds)
        assert parsed.error is None


def test_batching_does_not_change_answers(
    constrained: TransformersCaptioner, batch_outputs: list[CaptionOutput]
) -> None:
    alone = constrained.describe([CLIPS[1]])[0]
    assert alone == batch_outputs[1]


def test_unconstrained_run_returns_raw_text(tiny_qwen_dir: Path) -> None:
    captioner = TransformersCaptioner(
        str(tiny_qwen_dir), dtype="float32", max_new_tokens=12, constrained_json=False
    )
    try:
        (output,) = captioner.describe([make_clip(3600, 2, 60)])
    finally:
        captioner.close()
    assert isinstance(output.text, str)
    assert 0 < output.output_tokens <= 12
    assert output.prompt_tokens > 0
    with pytest.raises(RuntimeError, match="closed"):
        captioner.describe([make_clip(3600, 2, 60)])


def test_bad_clip_raises_before_the_model_runs(constrained: TransformersCaptioner) -> None:
    clip = make_clip(3600, 2, 10)
    clip.fps = 0.0
    with pytest.raises(ValueError, match="fps"):
        constrained.describe([clip])


# --- the description-length cap, driven without a model --------------------------------


def test_tracker_counts_characters_of_the_current_description() -> None:
    tracker = _DescriptionTracker()
    for piece in [
        b'{"events": [{"start": 1, "end": 2, "desc',
        b'ription": ',
        b'"ab',
        "日本".encode(),
    ]:
        tracker.feed(piece)
    assert tracker.inside and tracker.chars == 4
    tracker.feed("語".encode()[:1])  # a character split across tokens counts once
    tracker.feed("語".encode()[1:])
    assert tracker.chars == 5
    tracker.feed(b'x"}, {"start": ')
    assert not tracker.inside
    tracker.feed(b'3, "end": 4, "description": "')
    assert tracker.inside and tracker.chars == 0


def test_cap_ends_descriptions_at_the_limit(tiny_qwen_dir: Path, tokenizer: Any) -> None:
    """Logits always preferring a 3-character word: the cap ends descriptions at 200 characters."""
    import torch

    grammar = _grammar(str(tiny_qwen_dir), tokenizer, 151936, IM_END_ID)
    (word,) = tokenizer.encode("abc", add_special_tokens=False)
    base = torch.from_numpy(np.random.default_rng(0).standard_normal(151936).astype(np.float32))
    base[word] = 100.0
    (quote,) = tokenizer.encode(' "', add_special_tokens=False)
    base[quote] = 80.0  # open descriptions with a bare quote (not e.g. ' "("', one token)
    for closing in tokenizer.encode("}]}", add_special_tokens=False):
        base[closing] = 50.0  # close the list after the first event: keeps the test short

    processor = _EventsLogitsProcessor(grammar)
    ids = torch.tensor([[1, 2, 3]])
    for _ in range(model_inputs.max_constrained_output_tokens()):
        scores = processor(ids, base.clone()[None, :])
        token = int(scores.argmax())
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == IM_END_ID:
            break
    answer = json.loads(tokenizer.decode(ids[0, 3:-1].tolist()))
    validate(answer)
    descriptions = [event["description"] for event in answer["events"]]
    assert descriptions
    for description in descriptions:
        # 66 words fit; the 67th would pass the limit, so the best shorter token ends it.
        assert description.startswith("abc" * 66)
        assert len(description) <= MAX_DESCRIPTION_CHARS
