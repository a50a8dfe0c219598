"""The prompt text the model must read, written out independently of the code under test."""

from __future__ import annotations

from vidseek.indexer.prompt import SYSTEM_PROMPT


def chat_prompt(tags: list[str], pads: int, question: str) -> str:
    """The whole prompt in the project's layout: per frame pair a tag and ``pads`` video pads."""
    block = "<|video_pad|>" * pads
    video = "".join(f"{tag}<|vision_start|>{block}<|vision_end|>" for tag in tags)
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{video}{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
