"""The dense-captioning prompt and the JSON shape the model is asked (and constrained) to emit.

``PROMPT_VERSION`` is stored with every event; bump it whenever the prompt text
or schema changes so that re-indexing can tell old events from new.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["EVENTS_JSON_SCHEMA", "PROMPT_VERSION", "SYSTEM_PROMPT", "build_user_prompt"]

PROMPT_VERSION = "dense-caption-v1"

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
