"""The one place that builds Qwen3-VL model input for a window of video.

Every captioner backend (transformers in-process, vLLM offline, an OpenAI-compatible
server) takes its messages, chat text, video metadata, processor kwargs and decoding
schema from here, so that the same window gives the model the same tokens whichever
engine runs it.

What the model reads for a window
---------------------------------
Qwen3-VL sees time only as text. Its processor writes one ``<t seconds>`` tag per
temporal pair of frames, ``t`` being the mean of ``frames_indices / fps`` over the
pair, formatted with one decimal (``f"<{t:.1f} seconds>"``). We pass the window's
**absolute** source frame indices and the source fps, so the tags are absolute
video time (:func:`frame_pair_timestamps`, :func:`timestamp_tags`). A missing or zero
fps raises here: the processor would silently assume 24 fps.

Frames are resized by the decoder to multiples of 32 and passed with
``do_resize=False`` (else the processor shrinks the whole video to ~12K tokens) and
``do_sample_frames=False`` (else it re-samples at its default 2 fps). Each frame pair
then costs ``H * W / (32 * 32)`` ``<|video_pad|>`` tokens
(:func:`video_tokens_per_frame_pair`).

Prompt layout decision: no outer vision pair
--------------------------------------------
Per frame pair the model gets ``<t seconds><|vision_start|><|video_pad|>*N<|vision_end|>``.
The chat template renders a video as ``<|vision_start|><|video_pad|><|vision_end|>``;
implementations disagree on whether that outer ``<|vision_start|>``/``<|vision_end|>``
pair survives around the per-pair blocks:

- transformers 4.57 (the release that added Qwen3-VL, written with the Qwen team;
  ``Qwen3VLProcessor.__call__``) replaced the template's whole triple
  ``<|vision_start|><|video_pad|><|vision_end|>`` by the per-pair blocks, falling back
  to the bare ``<|video_pad|>`` only when the triple is absent ("vllm may input video
  token directly"): **no outer pair**.
- Qwen's own fine-tuning code (QwenLM/Qwen3-VL ``qwen-vl-finetune/qwenvl/data/
  data_processor.py``, ``preprocess_qwen_visual``) builds training sequences with
  ``processor.apply_chat_template(messages, tokenize=True, ...)`` and pins
  ``transformers==4.57.0.dev0`` (``qwen-vl-finetune/README.md``): the sequences Qwen
  fine-tunes on have **no outer pair**. Qwen's own evaluation (VideoMME) runs vLLM,
  whose Qwen3-VL prompt update also replaced the whole triple (the behaviour vLLM
  issue 46817 reports and PR 46957 would change).
- transformers >= 5.10 expands only the bare ``<|video_pad|>`` and keeps the outer
  pair (``<|vision_start|><t0 seconds><|vision_start|>...<|vision_end|><|vision_end|>``,
  2 extra tokens per video); vLLM PR 46957 proposes to follow it. No code of Qwen's
  produces that layout: it came with a refactoring of how processors expand
  placeholders.

We therefore use the reference layout, **no outer pair**::

    <|im_start|>user\\n<t0 seconds><|vision_start|><|video_pad|>*N<|vision_end|>
    <t1 seconds><|vision_start|>...<|vision_end|>This clip covers ...<|im_end|>

It is produced by handing the processor chat text whose video is the bare
``<|video_pad|>`` (:func:`processor_prompt_text`): every known processor version then
expands it without an outer pair. :func:`expanded_prompt_text` and
:func:`prompt_token_ids` give the final text / token ids independently of any
processor, so each backend can be pinned to this layout in a test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Protocol

import numpy as np

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

__all__ = [
    "GRAMMAR_MAX_DECIMALS",
    "GRAMMAR_MAX_INTEGER_DIGITS",
    "IM_END",
    "MERGE_SIZE",
    "PATCH_SIZE",
    "TEMPORAL_PATCH_SIZE",
    "VIDEO_PAD",
    "VISION_END",
    "VISION_START",
    "ChatTokenizer",
    "answer_grammar_ebnf",
    "answer_json_schema",
    "chat_messages",
    "chat_template",
    "check_clip",
    "events_grammar_ebnf",
    "expanded_prompt_text",
    "expanded_video_text",
    "frame_pair_timestamps",
    "is_grounding",
    "max_constrained_output_tokens",
    "processor_kwargs",
    "processor_prompt_text",
    "prompt_token_ids",
    "render_chat_text",
    "span_grammar_ebnf",
    "timestamp_tags",
    "user_prompt",
    "video_metadata",
    "video_tokens_per_frame_pair",
    "window_timestamps",
]

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
IM_END = "<|im_end|>"
_TEMPLATE_VIDEO = VISION_START + VIDEO_PAD + VISION_END

# Qwen3-VL vision geometry (every size of the family).
PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
_PIXELS_PER_TOKEN_SIDE = PATCH_SIZE * MERGE_SIZE  # 32

# Numbers the decoding grammar allows: < 10**7 s (115 days), millisecond precision.
GRAMMAR_MAX_INTEGER_DIGITS = 7
GRAMMAR_MAX_DECIMALS = 3


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer this module uses."""

    def apply_chat_template(self, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        """Render a conversation with a chat template."""
        ...

    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]:
        """Token ids of ``text``."""
        ...


@cache
def chat_template() -> str:
    """The Qwen3-VL Instruct chat template (Qwen3-VL-4B-Instruct's ``chat_template.json``)."""
    return (resources.files("vidseek.indexer") / "qwen3_vl_chat_template.jinja").read_text(
        encoding="utf-8"
    )


def processor_kwargs() -> dict[str, Any]:
    """Kwargs every backend passes to the Qwen3-VL processor with pre-sampled frames."""
    return {"do_sample_frames": False, "do_resize": False}


def _check_fps(fps: float) -> float:
    value = float(fps)
    if not math.isfinite(value) or value <= 0:
        # The processor would fall back to 24 fps and every <t seconds> tag would be wrong.
        raise ValueError(f"source fps must be a positive finite number, got {fps!r}")
    return value


def check_clip(clip: WindowClip) -> tuple[int, int, int]:
    """Validate a clip for Qwen3-VL and return its ``(frames, height, width)``.

    Raises ``ValueError`` for a missing/zero/non-finite fps, frames that are not
    ``(T, H, W, 3)`` uint8 with H and W multiples of 32, or a frame count that differs
    from the window's frame indices.
    """
    _check_fps(clip.fps)
    frames = clip.frames
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    count, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    if count == 0:
        raise ValueError("a clip needs at least one frame")
    if height % _PIXELS_PER_TOKEN_SIDE or width % _PIXELS_PER_TOKEN_SIDE:
        raise ValueError(
            f"frame size {width}x{height} is not a multiple of {_PIXELS_PER_TOKEN_SIDE}; "
            "resize frames before captioning (the processor runs with do_resize=False)"
        )
    if len(clip.window.frame_indices) != count:
        raise ValueError(
            f"window {clip.window.index} lists {len(clip.window.frame_indices)} frame indices "
            f"but the clip has {count} frames"
        )
    if clip.total_frames <= 0:
        raise ValueError(f"total_frames must be positive, got {clip.total_frames}")
    return count, height, width


def video_metadata(clip: WindowClip) -> dict[str, Any]:
    """The Qwen3-VL ``VideoMetadata`` fields for a clip, as a plain dict.

    ``frames_indices`` are the window's absolute source frame indices and ``fps`` the
    source fps, so the processor's ``<t seconds>`` tags are absolute video time.
    A fresh dict each call: processors write into the metadata they are given.
    """
    _, height, width = check_clip(clip)
    fps = _check_fps(clip.fps)
    return {
        "fps": fps,
        "frames_indices": [int(i) for i in clip.window.frame_indices],
        "total_num_frames": int(clip.total_frames),
        "width": width,
        "height": height,
        "duration": clip.total_frames / fps,
    }


def frame_pair_timestamps(
    frame_indices: Sequence[int], fps: float, temporal_patch_size: int = TEMPORAL_PATCH_SIZE
) -> list[float]:
    """Seconds of each temporal frame group, computed exactly as ``Qwen3VLProcessor`` does.

    An incomplete last group is padded with the last index (as the processor pads the
    frames), then each group's time is the mean of its first and last ``index / fps``.
    """
    fps = _check_fps(fps)
    indices = [int(i) for i in frame_indices]
    if not indices:
        return []
    if len(indices) % temporal_patch_size:
        indices.extend(
            indices[-1] for _ in range(temporal_patch_size - len(indices) % temporal_patch_size)
        )
    seconds = [i / fps for i in indices]
    return [
        (seconds[i] + seconds[i + temporal_patch_size - 1]) / 2
        for i in range(0, len(seconds), temporal_patch_size)
    ]


def timestamp_tags(clip: WindowClip) -> list[str]:
    """The ``<t seconds>`` tags the model reads for a clip, one per frame pair."""
    return [
        f"<{t:.1f} seconds>" for t in frame_pair_timestamps(clip.window.frame_indices, clip.fps)
    ]


def window_timestamps(window: Window, fps: float) -> list[float]:
    """The timestamps the model sees for a window, as the numbers written in its tags."""
    return [float(f"{t:.1f}") for t in frame_pair_timestamps(window.frame_indices, fps)]


def video_tokens_per_frame_pair(height: int, width: int) -> int:
    """``<|video_pad|>`` tokens per frame pair: one per 32x32 pixels."""
    if height % _PIXELS_PER_TOKEN_SIDE or width % _PIXELS_PER_TOKEN_SIDE:
        raise ValueError(
            f"frame size {width}x{height} is not a multiple of {_PIXELS_PER_TOKEN_SIDE}"
        )
    return (height // _PIXELS_PER_TOKEN_SIDE) * (width // _PIXELS_PER_TOKEN_SIDE)


def max_video_tokens(frames: int, max_pixels: int) -> int:
    """Most ``<|video_pad|>`` tokens of a clip of ``frames`` frames of at most ``max_pixels``.

    Frames are resized to multiples of 32 within ``max_pixels`` and merged in pairs,
    so a pair costs at most ``max_pixels // 1024`` tokens.
    """
    if frames < 1 or max_pixels < _PIXELS_PER_TOKEN_SIDE**2:
        raise ValueError(f"need frames >= 1 and max_pixels >= 1024, got {frames}, {max_pixels}")
    pairs = -(-frames // TEMPORAL_PATCH_SIZE)
    return pairs * (max_pixels // _PIXELS_PER_TOKEN_SIDE**2)


def is_grounding(window: Window) -> bool:
    """Whether a window asks for the span of a query (refinement) rather than dense captions."""
    return window.query is not None


def user_prompt(window: Window) -> str:
    """The question for a window: dense captioning, or grounding when it carries a query."""
    if window.query is not None:
        return build_grounding_prompt(window.start_seconds, window.end_seconds, window.query)
    return build_user_prompt(window.start_seconds, window.end_seconds)


def chat_messages(window: Window, video_item: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The conversation for a window: the system prompt, then the video and the question.

    The question is :func:`user_prompt` (grounding for a window with a ``query``).
    ``video_item`` is the user content entry standing for the video; the default
    ``{"type": "video"}`` is what the chat template needs. An OpenAI-style client
    passes its own (e.g. a ``video_url`` entry).
    """
    video = dict(video_item) if video_item is not None else {"type": "video"}
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [
                video,
                {"type": "text", "text": user_prompt(window)},
            ],
        },
    ]


def render_chat_text(tokenizer: ChatTokenizer, window: Window) -> str:
    """The chat text exactly as the Qwen3-VL template renders it (with the generation prompt).

    Uses the packaged template whatever template the checkpoint ships, so that all
    backends render the same text. The video appears as the template's
    ``<|vision_start|><|video_pad|><|vision_end|>``.
    """
    text = tokenizer.apply_chat_template(
        chat_messages(window),
        chat_template=chat_template(),
        tokenize=False,
        add_generation_prompt=True,
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def processor_prompt_text(tokenizer: ChatTokenizer, window: Window) -> str:
    """Chat text for a processor call: the video is one bare ``<|video_pad|>``.

    Any Qwen3-VL processor (transformers 4.57 and >= 5.10 alike) expands the bare
    placeholder into the per-pair blocks with no outer vision pair: the layout this
    project uses (see the module docstring).
    """
    text = render_chat_text(tokenizer, window)
    if text.count(_TEMPLATE_VIDEO) != 1 or text.count(VIDEO_PAD) != 1:
        raise ValueError("the chat template did not render exactly one video placeholder")
    return text.replace(_TEMPLATE_VIDEO, VIDEO_PAD)


def expanded_video_text(clip: WindowClip) -> str:
    """The text the video becomes: per frame pair, a tag then a vision block of pads."""
    _, height, width = check_clip(clip)
    pads = VIDEO_PAD * video_tokens_per_frame_pair(height, width)
    return "".join(f"{tag}{VISION_START}{pads}{VISION_END}" for tag in timestamp_tags(clip))


def expanded_prompt_text(tokenizer: ChatTokenizer, clip: WindowClip) -> str:
    """The complete prompt text the model reads for a clip, in this project's layout."""
    return processor_prompt_text(tokenizer, clip.window).replace(
        VIDEO_PAD, expanded_video_text(clip)
    )


def prompt_token_ids(tokenizer: ChatTokenizer, clip: WindowClip) -> list[int]:
    """The prompt token ids the model reads for a clip (what every backend must feed it)."""
    return list(tokenizer.encode(expanded_prompt_text(tokenizer, clip), add_special_tokens=False))


_NUMBER_RULE = (
    f'number ::= ("0" | [1-9] [0-9]{{0,{GRAMMAR_MAX_INTEGER_DIGITS - 1}}})'
    f' ("." [0-9]{{1,{GRAMMAR_MAX_DECIMALS}}})?'
)


def events_grammar_ebnf(*, bound_description: bool = True) -> str:
    """The decoding grammar (xgrammar / GBNF-style EBNF) for an answer to the prompt.

    It accepts compact JSON (``json.dumps`` separators, keys in prompt order) of the
    shape of ``EVENTS_JSON_SCHEMA``, narrowed so that decoding always terminates:

    - at most ``MAX_EVENTS_PER_WINDOW`` events and ``MAX_DESCRIPTION_CHARS``
      characters per description, as the schema's ``maxItems`` / ``maxLength``;
    - non-negative numbers of at most ``GRAMMAR_MAX_INTEGER_DIGITS`` integer digits and
      ``GRAMMAR_MAX_DECIMALS`` decimals, no exponent (xgrammar compiles a schema
      ``number`` to digits without end, so a degenerate model never terminates);
    - no escapes or control characters inside descriptions.

    Every accepted string satisfies ``EVENTS_JSON_SCHEMA``, and none is longer than
    :func:`max_constrained_output_tokens` tokens.

    The description bound costs xgrammar one precomputed token mask per character:
    compiling takes 10-50 s on two CPU cores (seconds on a GPU host, once per engine).
    ``bound_description=False`` leaves descriptions unbounded (compiles in ~0.05 s) for a
    backend that enforces ``MAX_DESCRIPTION_CHARS`` itself while decoding, as the
    transformers backend does; the two then accept the same answers.
    """
    more_events = (
        f' (", " event){{0,{MAX_EVENTS_PER_WINDOW - 1}}}' if MAX_EVENTS_PER_WINDOW > 1 else ""
    )
    repeat = f"{{0,{MAX_DESCRIPTION_CHARS}}}" if bound_description else "*"
    lines = [
        r'root ::= "{\"events\": [" events? "]}"',
        f"events ::= event{more_events}",
        r'event ::= "{\"start\": " number ", \"end\": " number '
        r'", \"description\": \"" description "\"}"',
        _NUMBER_RULE,
        r'description ::= [^"\\\x00-\x1f]' + repeat,
    ]
    return "\n".join(lines) + "\n"


def span_grammar_ebnf() -> str:
    """The decoding grammar for an answer to the grounding prompt: ``{"start": s, "end": e}``.

    Compact JSON of the shape of ``SPAN_JSON_SCHEMA`` with the numbers of
    :func:`events_grammar_ebnf`; no answer is longer than 40 tokens.
    """
    lines = [r'root ::= "{\"start\": " number ", \"end\": " number "}"', _NUMBER_RULE]
    return "\n".join(lines) + "\n"


def answer_grammar_ebnf(window: Window, *, bound_description: bool = True) -> str:
    """The decoding grammar for a window's question (:func:`user_prompt`)."""
    if is_grounding(window):
        return span_grammar_ebnf()
    return events_grammar_ebnf(bound_description=bound_description)


def answer_json_schema(window: Window) -> tuple[str, dict[str, Any]]:
    """``(name, JSON schema)`` of the answer to a window's question (servers without grammars)."""
    if is_grounding(window):
        return "span", SPAN_JSON_SCHEMA
    return "events", EVENTS_JSON_SCHEMA


def max_constrained_output_tokens() -> int:
    """An upper bound on the tokens of any answer the decoding grammar accepts, stop token included.

    Every token is at least one UTF-8 byte and a character at most four, so this is
    the byte length of the longest accepted answer plus one. With ``max_new_tokens``
    at least this large a constrained answer is never cut short.
    """
    number = GRAMMAR_MAX_INTEGER_DIGITS + 1 + GRAMMAR_MAX_DECIMALS
    event = (
        len('{"start": ')
        + number
        + len(', "end": ')
        + number
        + len(', "description": "')
        + 4 * MAX_DESCRIPTION_CHARS
        + len('"}')
    )
    events = MAX_EVENTS_PER_WINDOW * event + (MAX_EVENTS_PER_WINDOW - 1) * len(", ")
    return len('{"events": [') + events + len("]}") + 1
