"""What the model reads for a window: pinned against the real Qwen3-VL processor.

The processor code runs for real (``Qwen3VLProcessor`` of the tiny checkpoint, which
has the real tokenizer, vision geometry and chat template), so these tests pin the
exact ``<t seconds>`` tags, the prompt text and token layout, and the visual token
arithmetic that window planning relies on.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.prompts import chat_prompt
from vidseek.indexer import model_inputs
from vidseek.indexer.prompt import (
    EVENTS_JSON_SCHEMA,
    MAX_DESCRIPTION_CHARS,
    MAX_EVENTS_PER_WINDOW,
    SPAN_JSON_SCHEMA,
    SYSTEM_PROMPT,
    build_grounding_prompt,
    build_user_prompt,
)
from vidseek.indexer.types import Window, WindowClip

VIDEO_PAD_ID = 151656
VISION_START_ID = 151652
VISION_END_ID = 151653
TAG = re.compile(r"<(\d+\.\d) seconds>")

# A 2-hour source at 30 fps; the window 3600-3660 s sampled at 1 fps.
SOURCE_FPS = 30.0
SOURCE_FRAMES = 2 * 3600 * 30
WINDOW_INDICES = tuple(108000 + 30 * k for k in range(60))
EXPECTED_TAGS = [f"<{3600 + 2 * k + 0.5:.1f} seconds>" for k in range(30)]  # 3600.5 ... 3658.5


def make_clip(
    indices: tuple[int, ...] = WINDOW_INDICES,
    fps: float = SOURCE_FPS,
    total_frames: int = SOURCE_FRAMES,
    height: int = 64,
    width: int = 96,
    start: float = 3600.0,
    end: float = 3660.0,
) -> WindowClip:
    rng = np.random.default_rng(len(indices))
    frames = rng.integers(0, 256, size=(len(indices), height, width, 3), dtype=np.uint8)
    window = Window(index=60, start_seconds=start, end_seconds=end, frame_indices=indices)
    return WindowClip(window=window, frames=frames, fps=fps, total_frames=total_frames)


@pytest.fixture(scope="module")
def processor(tiny_qwen_dir: Path) -> Any:
    import transformers

    auto: Any = transformers.AutoProcessor
    return auto.from_pretrained(tiny_qwen_dir)


def run_processor(processor: Any, clip: WindowClip, metadata: dict[str, Any] | None = None) -> Any:
    """The real processor on the inputs every backend builds."""
    return processor(
        text=[model_inputs.processor_prompt_text(processor.tokenizer, clip.window)],
        videos=[clip.frames],
        video_metadata=[metadata if metadata is not None else model_inputs.video_metadata(clip)],
        return_tensors="np",
        **model_inputs.processor_kwargs(),
    )


def test_timestamps_are_absolute_for_a_window_mid_video(processor: Any) -> None:
    clip = make_clip()
    out = run_processor(processor, clip)
    text = processor.tokenizer.decode(out["input_ids"][0])
    assert re.findall(r"<[\d.]+ seconds>", text) == EXPECTED_TAGS
    assert model_inputs.timestamp_tags(clip) == EXPECTED_TAGS
    assert model_inputs.window_timestamps(clip.window, clip.fps) == [
        3600.5 + 2 * k for k in range(30)
    ]


def test_exact_prompt_text_and_layout(processor: Any) -> None:
    clip = make_clip()
    out = run_processor(processor, clip)
    # 64x96 frames: 2x3 tokens of 32x32 pixels per frame pair
    expected = chat_prompt(EXPECTED_TAGS, 6, build_user_prompt(3600.0, 3660.0))
    ids = out["input_ids"][0].tolist()
    assert processor.tokenizer.decode(ids) == expected
    assert model_inputs.expanded_prompt_text(processor.tokenizer, clip) == expected
    assert model_inputs.prompt_token_ids(processor.tokenizer, clip) == ids
    # The chosen layout: no outer <|vision_start|>...<|vision_end|> around the pairs.
    user = processor.tokenizer.encode("<|im_start|>user\n", add_special_tokens=False)
    first_video_token = ids[_find(ids, user) + len(user)]
    assert processor.tokenizer.decode([first_video_token]) == "<"
    assert ids.count(VISION_START_ID) == ids.count(VISION_END_ID) == len(EXPECTED_TAGS)


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    raise AssertionError(f"{needle} not in sequence")


def test_template_triple_would_add_an_outer_vision_pair(processor: Any) -> None:
    """Why the bare placeholder: transformers >= 5.10 keeps the template's wrapper."""
    clip = make_clip()
    rendered = model_inputs.render_chat_text(processor.tokenizer, clip.window)
    assert rendered.count("<|vision_start|><|video_pad|><|vision_end|>") == 1
    out = processor(
        text=[rendered],
        videos=[clip.frames],
        video_metadata=[model_inputs.video_metadata(clip)],
        return_tensors="np",
        **model_inputs.processor_kwargs(),
    )
    ours = model_inputs.prompt_token_ids(processor.tokenizer, clip)
    theirs = out["input_ids"][0].tolist()
    assert len(theirs) == len(ours) + 2
    assert theirs.count(VISION_START_ID) == len(EXPECTED_TAGS) + 1


def test_video_token_count_and_size_are_kept(processor: Any) -> None:
    clip = make_clip(height=352, width=640, indices=WINDOW_INDICES[:4], end=3604.0)
    out = run_processor(processor, clip)
    per_pair = model_inputs.video_tokens_per_frame_pair(352, 640)
    assert per_pair == 352 * 640 // (32 * 32) == 220
    assert int((out["input_ids"][0] == VIDEO_PAD_ID).sum()) == 2 * per_pair
    # do_resize=False kept 640x352: grid of 16-pixel patches, 2 temporal patches.
    assert out["video_grid_thw"].tolist() == [[2, 352 // 16, 640 // 16]]
    assert out["pixel_values_videos"].shape == (2 * 22 * 40, 3 * 2 * 16 * 16)
    assert len(out["input_ids"][0]) == len(model_inputs.prompt_token_ids(processor.tokenizer, clip))


def test_max_video_tokens_bounds_what_the_processor_writes(processor: Any) -> None:
    clip = make_clip(height=352, width=640, indices=WINDOW_INDICES[:3], end=3604.0)
    out = run_processor(processor, clip)
    written = int((out["input_ids"][0] == VIDEO_PAD_ID).sum())
    # 3 frames make 2 pairs; 352x640 is within 640x360 pixels.
    assert written == 2 * 220 <= model_inputs.max_video_tokens(3, 640 * 360) == 2 * 225
    assert model_inputs.max_video_tokens(600, 256 * 448) == 33_600
    with pytest.raises(ValueError, match="frames >= 1"):
        model_inputs.max_video_tokens(0, 640 * 360)


@pytest.mark.parametrize(
    ("indices", "fps"),
    [
        ((0, 15, 30, 45, 60), 30.0),  # odd count: the last index pads the last pair
        (tuple(round((420 + k) * 30000 / 1001) for k in range(6)), 30000 / 1001),  # NTSC
        (tuple(range(1_000_000, 1_000_000 + 8 * 25, 25)), 25.0),  # 11 hours in
        ((7, 8), 23.976),
    ],
)
def test_timestamps_match_the_processor(
    processor: Any, indices: tuple[int, ...], fps: float
) -> None:
    clip = make_clip(indices=indices, fps=fps, total_frames=max(indices) + 1, height=32, width=32)
    out = run_processor(processor, clip)
    tags = re.findall(r"<[\d.]+ seconds>", processor.tokenizer.decode(out["input_ids"][0]))
    assert tags == model_inputs.timestamp_tags(clip)
    assert len(tags) == math.ceil(len(indices) / 2)
    assert out["input_ids"][0].tolist() == model_inputs.prompt_token_ids(processor.tokenizer, clip)


def test_metadata_fields() -> None:
    clip = make_clip()
    assert model_inputs.video_metadata(clip) == {
        "fps": 30.0,
        "frames_indices": list(WINDOW_INDICES),
        "total_num_frames": SOURCE_FRAMES,
        "width": 96,
        "height": 64,
        "duration": 7200.0,
    }
    assert model_inputs.processor_kwargs() == {"do_sample_frames": False, "do_resize": False}


@pytest.mark.parametrize("fps", [0.0, -30.0, float("nan"), float("inf")])
def test_fps_is_required(fps: float) -> None:
    clip = make_clip(fps=fps)
    with pytest.raises(ValueError, match="fps"):
        model_inputs.video_metadata(clip)
    with pytest.raises(ValueError, match="fps"):
        model_inputs.timestamp_tags(clip)


def test_without_fps_the_processor_would_silently_assume_24(processor: Any) -> None:
    """The hazard video_metadata guards against: fps None gives wrong tags, no error."""
    clip = make_clip(indices=WINDOW_INDICES[:2], end=3602.0, height=32, width=32)
    metadata = model_inputs.video_metadata(clip) | {"fps": None}
    out = run_processor(processor, clip, metadata)
    tags = re.findall(r"<[\d.]+ seconds>", processor.tokenizer.decode(out["input_ids"][0]))
    assert tags == ["<4500.6 seconds>"]  # (108000 + 108030) / 2 / 24, not 3600.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"height": 48}, "multiple of 32"),
        ({"width": 100}, "multiple of 32"),
        ({"indices": WINDOW_INDICES[:3]}, None),
        ({"total_frames": 0}, "total_frames"),
    ],
)
def test_bad_clips_are_rejected(change: dict[str, Any], message: str | None) -> None:
    if "indices" in change:
        clip = make_clip()
        clip = WindowClip(
            window=Window(0, 0.0, 3.0, change["indices"]),
            frames=clip.frames,
            fps=clip.fps,
            total_frames=clip.total_frames,
        )
        message = "frame indices"
    else:
        clip = make_clip(**change)
    with pytest.raises(ValueError, match=message):
        model_inputs.check_clip(clip)


def test_bad_frame_arrays_are_rejected() -> None:
    clip = make_clip(indices=WINDOW_INDICES[:2], height=32, width=32)
    clip.frames = clip.frames.astype(np.float32)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="uint8"):
        model_inputs.check_clip(clip)
    clip.frames = np.zeros((2, 32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        model_inputs.check_clip(clip)


def test_messages_for_every_backend() -> None:
    window = Window(3, 180.0, 240.0, (5400, 5430))
    messages = model_inputs.chat_messages(window)
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": build_user_prompt(180.0, 240.0)},
            ],
        },
    ]
    custom = model_inputs.chat_messages(window, {"type": "video_url", "video_url": {"url": "x"}})
    assert custom[1]["content"][0] == {"type": "video_url", "video_url": {"url": "x"}}


def test_chat_template_is_the_qwen3_vl_instruct_template() -> None:
    template = model_inputs.chat_template()
    assert "<|vision_start|><|video_pad|><|vision_end|>" in template
    assert "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}" in template
    assert template.endswith(
        "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
    )


# --- the decoding grammar ---------------------------------------------------------------


def _accepts(grammar: str, text: str) -> bool:
    import xgrammar as xgr

    compiled = xgr.GrammarCompiler(xgr.TokenizerInfo([]), cache_enabled=False).compile_grammar(
        grammar
    )
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    return bool(matcher.accept_string(text)) and bool(matcher.is_terminated())


def _answer(events: list[dict[str, Any]]) -> str:
    return json.dumps({"events": events}, ensure_ascii=False)


def _event(
    start: Any = 3600.5, end: Any = 3602.25, description: str = "A man opens a red door."
) -> dict[str, Any]:
    return {"start": start, "end": end, "description": description}


@pytest.fixture(scope="module", params=[True, False], ids=["bounded", "unbounded"])
def grammar(request: pytest.FixtureRequest) -> tuple[str, bool]:
    return model_inputs.events_grammar_ebnf(bound_description=request.param), request.param


@pytest.mark.parametrize(
    "text",
    [
        _answer([]),
        _answer([_event()]),
        _answer([_event(0, 0.5, "x")] * MAX_EVENTS_PER_WINDOW),
        _answer([_event(9999999.999, 1234567, "日本語 émoji 🎬 text")]),
        _answer([_event(description="")]),
        _answer([_event(description="x" * MAX_DESCRIPTION_CHARS)]),
        _answer([_event(description="🎬" * MAX_DESCRIPTION_CHARS)]),
    ],
)
def test_grammar_accepts_schema_answers(grammar: tuple[str, bool], text: str) -> None:
    assert _accepts(grammar[0], text)
    _validate(json.loads(text))


@pytest.mark.parametrize(
    ("text", "rejected_by_unbounded"),
    [
        (_answer([_event()] * (MAX_EVENTS_PER_WINDOW + 1)), True),
        (_answer([_event(description="x" * (MAX_DESCRIPTION_CHARS + 1))]), False),
        (_answer([_event(start=-1)]), True),
        (_answer([_event(start=12345678)]), True),
        (_answer([_event(start=1.2345)]), True),
        (_answer([_event(start="1")]), True),
        (_answer([_event(description='say "hi"')]), True),
        (_answer([_event(description="tab\there")]), True),
        (_answer([{**_event(), "extra": 1}]), True),
        (_answer([{"end": 1, "start": 0, "description": "x"}]), True),
        ('{"events": [] }', True),
        ('{"events":[]}', True),
        ("[]", True),
    ],
)
def test_grammar_rejects_what_is_not_allowed(
    grammar: tuple[str, bool], text: str, rejected_by_unbounded: bool
) -> None:
    ebnf, bounded = grammar
    assert _accepts(ebnf, text) is (not bounded and not rejected_by_unbounded)


def test_longest_answer_fits_the_token_bound() -> None:
    longest = _answer(
        [_event("9999999.999", "9999999.999", "🎬" * MAX_DESCRIPTION_CHARS)] * MAX_EVENTS_PER_WINDOW
    ).replace('"9999999.999"', "9999999.999")
    assert _accepts(model_inputs.events_grammar_ebnf(), longest)
    # Every token is at least one byte; +1 for <|im_end|>.
    assert len(longest.encode()) + 1 == model_inputs.max_constrained_output_tokens()


def _validate(answer: Any) -> None:
    """The checks of EVENTS_JSON_SCHEMA (no jsonschema package here)."""
    items = EVENTS_JSON_SCHEMA["properties"]["events"]
    assert isinstance(answer, dict) and set(answer) == {"events"}
    assert isinstance(answer["events"], list) and len(answer["events"]) <= items["maxItems"]
    for event in answer["events"]:
        assert set(event) == {"start", "end", "description"}
        assert all(isinstance(event[k], int | float) for k in ("start", "end"))
        assert isinstance(event["description"], str)
        assert len(event["description"]) <= items["items"]["properties"]["description"]["maxLength"]


# --- the grounding question (search refinement) -----------------------------------------

GROUNDING_QUERY = 'a man opens a "red" door'
# 95-107 s of a 30 fps source at 2 fps: the padded clip of a moment at 100-102 s.
GROUNDING_INDICES = tuple(2850 + 15 * k for k in range(24))
GROUNDING_TAGS = [f"<{95 + k}.2 seconds>" for k in range(12)]  # 95.25 s ... 106.25 s


def make_grounding_clip() -> WindowClip:
    clip = make_clip(
        indices=GROUNDING_INDICES, total_frames=3600, height=32, width=64, start=95.0, end=107.0
    )
    window = clip.window
    clip.window = Window(window.index, 95.0, 107.0, window.frame_indices, query=GROUNDING_QUERY)
    return clip


def test_grounding_prompt_text_and_layout(processor: Any) -> None:
    clip = make_grounding_clip()
    out = run_processor(processor, clip)
    question = build_grounding_prompt(95.0, 107.0, GROUNDING_QUERY)
    expected = chat_prompt(GROUNDING_TAGS, 2, question)  # 32x64 frames: 2 pads per pair
    ids = out["input_ids"][0].tolist()
    assert processor.tokenizer.decode(ids) == expected
    assert model_inputs.prompt_token_ids(processor.tokenizer, clip) == ids
    assert model_inputs.timestamp_tags(clip) == GROUNDING_TAGS
    assert ids.count(VISION_START_ID) == ids.count(VISION_END_ID) == 12
    assert '"a man opens a \\"red\\" door"' in question  # quoted as a JSON string
    assert "95.0 to 107.0 seconds" in question
    assert "Localize every distinct event" not in question


def test_grounding_answers_are_one_span() -> None:
    clip = make_grounding_clip()
    assert model_inputs.is_grounding(clip.window)
    assert not model_inputs.is_grounding(make_clip().window)
    span = model_inputs.answer_grammar_ebnf(clip.window)
    assert span == model_inputs.span_grammar_ebnf()
    assert model_inputs.answer_grammar_ebnf(make_clip().window) == (
        model_inputs.events_grammar_ebnf()
    )
    assert model_inputs.answer_json_schema(clip.window) == ("span", SPAN_JSON_SCHEMA)
    assert _accepts(span, '{"start": 95.5, "end": 101.25}')
    assert _accepts(span, '{"start": 0, "end": 9999999.999}')
    for rejected in (
        _answer([_event()]),
        '{"start": -1, "end": 2}',
        '{"end": 2, "start": 1}',
        '{"start": 1, "end": 2, "description": "x"}',
        '{"start": 1.2345, "end": 2}',
    ):
        assert not _accepts(span, rejected), rejected
