"""The captioner interface: a vision-language model that describes windows of video.

Backends (selected by the ``captioner`` setting, imported only when selected):

- ``transformers``: in-process Hugging Face model (CPU or GPU); the test backend.
- ``vllm``: in-process ``vllm.LLM`` (GPU), many windows in flight at once; the
  server uses vLLM's async engine instead (:mod:`vidseek.indexer.engine_vllm`).
- ``openai``: an OpenAI-compatible server (``vllm serve``).

The server shares one engine between every ingest job and search refinement
(:mod:`vidseek.indexer.engine`); a synchronous captioner becomes one through
:class:`~vidseek.indexer.engine.BatchingEngine`.

Every backend receives pre-sampled frames with their **absolute** source frame
indices and the source fps, so the ``<t seconds>`` tags the model reads are
absolute video time, and passes ``do_resize=False`` / ``do_sample_frames=False``
to the Qwen3-VL processor (which otherwise shrinks any video to ~12K tokens and
re-samples frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from vidseek.indexer.types import CaptionOutput, WindowClip

__all__ = ["Captioner"]


@runtime_checkable
class Captioner(Protocol):
    """Describes windows of video as raw model text (parsed later, untrusted)."""

    @property
    def model_id(self) -> str:
        """The model name recorded with every event."""
        ...

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        """Caption each clip; one output per clip, in order.

        A backend may batch the clips into one engine call. It raises only for
        failures of the engine itself, never for unparseable text.
        """
        ...

    def close(self) -> None:
        """Release the model and any engine resources."""
        ...
