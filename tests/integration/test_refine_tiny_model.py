"""Search refinement through the real plumbing: decoder process, transformers Qwen3-VL code.

The tiny random model's answer is noise (constrained to one ``{"start": s, "end": e}``
span), so the result may be any span inside the clip or the coarse moment; what is
checked is what the model was shown: the grounding prompt with the absolute
``<t seconds>`` tags of the padded clip.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.prompts import chat_prompt
from tests.support.videos import write_video
from vidseek.indexer import model_inputs
from vidseek.indexer.captioner_transformers import TransformersCaptioner
from vidseek.indexer.engine import BatchingEngine
from vidseek.indexer.prompt import build_grounding_prompt
from vidseek.indexer.types import CaptionOutput, WindowClip
from vidseek.indexer.video import probe
from vidseek.server.refine import RefineConfig, Refiner
from vidseek.server.search import MomentResult
from vidseek.storage.store import Store

QUERY = "a green screen"


class RecordingCaptioner(TransformersCaptioner):
    """The real transformers captioner, keeping the prompt token ids and the answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompts: list[list[int]] = []
        self.answers: list[str] = []
        generate = self._model.generate

        def recording_generate(**inputs: Any) -> Any:
            self.prompts.extend(row.tolist() for row in inputs["input_ids"])
            return generate(**inputs)

        self._model.generate = recording_generate

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        outputs = super().describe(clips)
        self.answers.extend(output.text for output in outputs)
        return outputs


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """110 s at 10 fps, 160x96, a new colour every second."""
    path = tmp_path_factory.mktemp("videos") / "long.mp4"
    return Path(write_video(path, seconds=110, fps=10, width=160, height=96))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'v.db'}", tmp_path / "faiss.index", 8)
    yield s
    s.close()


@pytest.mark.slow
def test_tiny_model_sees_the_padded_clip_with_absolute_timestamps(
    tiny_qwen_dir: Path, long_video: Path, store: Store
) -> None:
    info = probe(long_video, timeout=60, backend="pyav")
    assert (info.fps, info.frame_count) == (10.0, 1100)
    video_id = store.upsert_video(
        uri=str(long_video),
        content_hash="ef" * 32,
        duration=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        frame_count=info.frame_count,
    )
    captioner = RecordingCaptioner(
        str(tiny_qwen_dir), device="cpu", dtype="float32", max_new_tokens=64
    )
    engine = BatchingEngine(captioner)
    refiner = Refiner(
        store,
        lambda: engine,
        RefineConfig(fps=2.0, pad_seconds=5.0, max_pixels=160 * 96, decode_backend="pyav"),
    )
    coarse = MomentResult(
        video_id=video_id,
        start_seconds=100.0,
        end_seconds=102.0,
        description="a green screen",
        score=0.7,
        event_ids=(7,),
    )
    try:
        (result,) = refiner.refine(QUERY, [coarse], time.monotonic() + 300)
    finally:
        refiner.close()
        engine.close()  # closes the captioner too

    # The model saw exactly one prompt: the grounding question about the clip
    # [95, 107] s, sampled at 2 fps from the 10 fps source (frames 950, 955, ...,
    # 1065), with absolute tags: (95.0 + 95.5) / 2 = 95.25 s, written "<95.2 seconds>".
    (prompt,) = captioner.prompts
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(tiny_qwen_dir).decode(prompt)
    tags = re.findall(r"<[\d.]+ seconds>", text)
    assert tags == [f"<{95 + k}.2 seconds>" for k in range(12)]
    assert tags[0] == "<95.2 seconds>" and tags[-1] == "<106.2 seconds>"
    pads = model_inputs.video_tokens_per_frame_pair(96, 160)
    assert text == chat_prompt(tags, pads, build_grounding_prompt(95.0, 107.0, QUERY))

    # Constrained decoding turns the noise into one span, {"start": s, "end": e}.
    (answer,) = captioner.answers
    assert set(json.loads(answer)) == {"start", "end"}

    # Random weights: a span inside the clip, or the coarse moment unchanged.
    if result.refined:
        assert 95.0 <= result.start_seconds < result.end_seconds <= 107.0
        assert (result.coarse_start_seconds, result.coarse_end_seconds) == (100.0, 102.0)
        assert (result.video_id, result.score, result.event_ids) == (video_id, 0.7, (7,))
    else:
        assert result == coarse
