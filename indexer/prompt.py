"""The prompts and the JSON shapes the model is asked (and constrained) to emit.

Two questions are asked about a clip: dense captioning (every event, for
indexing; :func:`build_user_prompt`) and grounding (the one span that matches a
search query, for second-level refinement; :func:`build_grounding_prompt`).

``PROMPT_VERSION`` is stored with every event; bump it whenever the captioning
prompt text or schema changes so that re-indexing can tell old events from new.
Grounding answers are not stored.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "EVENTS_JSON_SCHEMA",
    "GROUNDING_PROMPT_VERSION",
    "PROMPT_VERSION",
    "SPAN_JSON_SCHEMA",
    "SYSTEM_PROMPT",
    "build_grounding_prompt",
    "build_user_prompt",
]

PROMPT_VERSION = "dense-caption-v1"
GROUNDING_PROMPT_VERSION = "grounding-v1"

SYSTEM_PROMPT = "You are a helpful assistant."

# Bounded so that constrained decoding always terminates within the token budget,
# even with a model that never "wants" to stop.
MAX_EVENTS_PER_WINDOW = 32
MAX_DESCRIPTION_CHARS = 200

EVENTS_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "events": {
            "type": "array",
            "maxItems": MAX_EVENTS_PER_WINDOW,
            "items": {
                "type": "object",
                "properties": {
                    "start": {"type": "number"},
                    "end": {"type": "number"},
                    "description": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
                },
                "required": ["start", "end", "description"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["events"],
    "additionalProperties": False,
}


def build_user_prompt(start_seconds: float, end_seconds: float) -> str:
    """The text that follows the video in the user turn."""
    example = json.dumps(
        {"events": [{"start": 12.0, "end": 17.5, "description": "A man opens a red door."}]}
    )
    return (
        f"This clip covers {start_seconds:.1f} to {end_seconds:.1f} seconds of a longer video; "
        "the timestamps shown with the frames are seconds from the start of that video. "
        "Localize every distinct event in the clip. For each event give its start and end "
        "time in seconds and describe what happens in one concrete sentence (who, what, "
        "where, any visible text). Answer with JSON only, in this form: "
        f"{example}"
    )


SPAN_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"start": {"type": "number"}, "end": {"type": "number"}},
    "required": ["start", "end"],
    "additionalProperties": False,
}


def build_grounding_prompt(start_seconds: float, end_seconds: float, query: str) -> str:
    """The text that follows the video when the model is asked where ``query`` happens.

    The query is quoted as a JSON string, so its quotes and line breaks cannot end
    the instruction early.
    """
    example = json.dumps({"start": 12.0, "end": 17.5})
    return (
        f"This clip covers {start_seconds:.1f} to {end_seconds:.1f} seconds of a longer video; "
        "the timestamps shown with the frames are seconds from the start of that video. "
        f"Find the one moment in the clip that best matches this description: "
        f"{json.dumps(query, ensure_ascii=False)}. Give the start and end time of that moment "
        "in seconds, as precisely as the frames allow. Answer with JSON only, in this form: "
        f"{example}"
    )
