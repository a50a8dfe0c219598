"""The vLLM backend up to the engine call: the request each window produces, and its tokens.

vLLM is not installed here. What vLLM 0.26 does with a request is pinned two ways:
the transformers ``Qwen3VLProcessor`` (what the transformers backend runs) is applied to
the very request the vLLM backend builds, and a transcription of vLLM 0.26's Qwen3-VL
prompt expansion (``Qwen3VLMultiModalProcessor._call_hf_processor`` /
``get_video_repl`` / ``_calculate_timestamps``) is applied to it too; both must give
:func:`model_inputs.prompt_token_ids`. ``tests/gpu/test_vllm_captioner.py`` checks the
real engine.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.fake_vllm import install_fake_vllm
from vidseek.indexer import model_inputs
from vidseek.indexer.captioner_vllm import (
    VllmCaptioner,
    decoding_spec,
    engine_kwargs,
    processor_expands_bare_video_token,
    vllm_prompt_text,
    window_request,
)
from vidseek.indexer.types import Window, WindowClip

VISION_START_ID = 151652
VISION_END_ID = 151653
VIDEO_PAD_ID = 151656

NTSC = 30000 / 1001


def make_clip(
    start_second: int = 420,
    count: int = 6,
    fps: float = NTSC,
    height: int = 64,
    width: int = 96,
    index: int = 7,
) -> WindowClip:
    """A window in the middle of a long video: 1 fps samples from ``start_second`` on."""
    indices = tuple(round((start_second + k) * fps) for k in range(count))
    rng = np.random.default_rng(start_second)
    frames = rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)
    window = Window(
        index=index,
        start_seconds=start_second,
        end_seconds=start_second + count,
        frame_indices=indices,
    )
    return WindowClip(window=window, frames=frames, fps=fps, total_frames=round(3600 * fps))


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoProcessor

    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    return AutoProcessor.from_pretrained(directory)


# --- vLLM 0.26's Qwen3-VL prompt expansion, transcribed -------------------------------


def vllm_026_prompt_ids(
    tokenizer: Any, request: dict[str, Any], bare_video_token: bool
) -> list[int]:
    """The prompt token ids vLLM 0.26 builds for an offline Qwen3-VL video request."""
    ((frames, metadata),) = request["multi_modal_data"]["video"]
    assert request["mm_processor_kwargs"]["do_sample_frames"] is False
    # _calculate_timestamps: pad indices to the temporal patch, mean of each pair.
    indices = list(metadata["frames_indices"])
    if len(indices) % 2:
        indices.append(indices[-1])
    seconds = [i / metadata["fps"] for i in indices]
    timestamps = [(seconds[i] + seconds[i + 1]) / 2 for i in range(0, len(seconds), 2)]
    # do_resize=False: the grid is the frame size in 16-pixel patches, merged 2x2.
    pads = (frames.shape[1] // 16) * (frames.shape[2] // 16) // 4
    # get_video_repl: each timestamp tokenised on its own.
    replacement: list[int] = []
    for t in timestamps:
        replacement += tokenizer.encode(f"<{t:.1f} seconds>", add_special_tokens=False)
        replacement += [VISION_START_ID] + [VIDEO_PAD_ID] * pads + [VISION_END_ID]
    prompt_ids: list[int] = list(tokenizer.encode(request["prompt"], add_special_tokens=False))
    target = [VIDEO_PAD_ID] if bare_video_token else [VISION_START_ID, VIDEO_PAD_ID, VISION_END_ID]
    for i in range(len(prompt_ids) - len(target) + 1):
        if prompt_ids[i : i + len(target)] == target:
            return prompt_ids[:i] + replacement + prompt_ids[i + len(target) :]
    raise AssertionError("vLLM would find no video placeholder in the prompt")


def transformers_prompt_ids(processor: Any, request: dict[str, Any]) -> list[int]:
    """What the transformers backend's processor call makes of the same request."""
    import torch

    ((frames, metadata),) = request["multi_modal_data"]["video"]
    inputs = processor(
        text=[request["prompt"]],
        videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)],
        video_metadata=[dict(metadata)],
        return_tensors="pt",
        **request["mm_processor_kwargs"],
    )
    return [int(i) for i in inputs["input_ids"][0].tolist()]


# --- the request ----------------------------------------------------------------------


def test_request_for_a_mid_video_window_carries_absolute_indices_and_source_fps(processor):
    clip = make_clip()
    prompt = vllm_prompt_text(processor.tokenizer, clip)
    request = window_request(clip, prompt)

    assert set(request) == {"prompt", "multi_modal_data", "mm_processor_kwargs"}
    assert request["prompt"] == model_inputs.processor_prompt_text(processor.tokenizer, clip.window)
    assert request["prompt"].count("<|video_pad|>") == 1
    assert "<|vision_start|><|video_pad|>" not in request["prompt"]
    assert request["mm_processor_kwargs"] == {"do_sample_frames": False, "do_resize": False}

    videos = request["multi_modal_data"]["video"]
    assert isinstance(videos, list) and len(videos) == 1
    frames, metadata = videos[0]
    assert frames is clip.frames  # no copy
    assert metadata["frames_indices"] == list(clip.window.frame_indices)
    assert metadata["frames_indices"][0] == round(420 * NTSC)
    assert metadata["fps"] == pytest.approx(NTSC)
    assert metadata["total_num_frames"] == clip.total_frames
    assert (metadata["height"], metadata["width"]) == (64, 96)


def test_request_refuses_a_clip_without_fps(processor):
    clip = make_clip()
    clip.fps = 0.0
    with pytest.raises(ValueError, match="fps"):
        window_request(clip, "prompt")


def test_prompt_for_old_processors_keeps_the_template_triple(processor):
    clip = make_clip()
    text = vllm_prompt_text(processor.tokenizer, clip, bare_video_token=False)
    assert text.count("<|vision_start|><|video_pad|><|vision_end|>") == 1
    assert text == model_inputs.render_chat_text(processor.tokenizer, clip.window)


def test_installed_transformers_expands_the_bare_video_token():
    # transformers >= 5.10 (the project's pin): vLLM targets the bare <|video_pad|>.
    assert processor_expands_bare_video_token() is True


# --- the tokens -----------------------------------------------------------------------


def same_tokens_in_both_engines(processor: Any, clip: WindowClip) -> list[int]:
    """The prompt ids of the clip's vLLM request, checked equal in vLLM 0.26 and transformers."""
    tokenizer = processor.tokenizer
    request = window_request(clip, vllm_prompt_text(tokenizer, clip))
    expected = model_inputs.prompt_token_ids(tokenizer, clip)
    assert transformers_prompt_ids(processor, request) == expected
    assert vllm_026_prompt_ids(tokenizer, request, bare_video_token=True) == expected
    return expected


@pytest.mark.parametrize("count", [6, 5], ids=["even-frames", "odd-frames"])
def test_vllm_request_has_the_same_token_layout_as_the_transformers_path(processor, count):
    clip = make_clip(count=count)
    tokenizer = processor.tokenizer
    expected = same_tokens_in_both_engines(processor, clip)

    text = tokenizer.decode(expected, skip_special_tokens=False)
    assert "<|vision_start|><|vision_start|>" not in text
    assert "<|vision_end|><|vision_end|>" not in text
    pairs = (count + 1) // 2
    assert expected.count(VISION_START_ID) == pairs
    assert expected.count(VIDEO_PAD_ID) == pairs * 6
    assert text.count("seconds>") == pairs
    assert "<420.5 seconds>" in text  # (420 s + 421 s) / 2: absolute, not 0.5
    assert "<0.5 seconds>" not in text


def test_old_processor_prompt_gives_the_same_tokens_in_vllm(processor):
    clip = make_clip()
    tokenizer = processor.tokenizer
    request = window_request(clip, vllm_prompt_text(tokenizer, clip, bare_video_token=False))
    assert vllm_026_prompt_ids(tokenizer, request, bare_video_token=False) == (
        model_inputs.prompt_token_ids(tokenizer, clip)
    )


# --- decoding and engine settings -----------------------------------------------------


def test_decoding_is_greedy_and_constrained_by_the_shared_grammar():
    spec = decoding_spec(512, constrained_json=True)
    assert spec.temperature == 0.0
    assert spec.max_tokens == 512
    assert spec.grammar == model_inputs.events_grammar_ebnf()
    assert decoding_spec(512, constrained_json=False).grammar is None
    with pytest.raises(ValueError):
        decoding_spec(0, constrained_json=True)


def test_engine_kwargs_allow_one_video_and_no_image():
    kwargs = engine_kwargs(
        "/models/q", gpu_memory_utilization=0.5, max_model_len=32768, extra={"seed": 3}
    )
    assert kwargs["model"] == "/models/q"
    assert kwargs["limit_mm_per_prompt"] == {"image": 0, "video": 1}
    assert kwargs["max_model_len"] == 32768
    assert kwargs["gpu_memory_utilization"] == 0.5
    assert kwargs["seed"] == 3
    with pytest.raises(ValueError):
        engine_kwargs("m", gpu_memory_utilization=1.5, max_model_len=10)


# --- the captioner class against a stand-in vllm module -------------------------------


class _FakeLLM:
    instances: list[_FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list[dict[str, Any]], Any, Any]] = []
        self.tokenizer: Any = None
        _FakeLLM.instances.append(self)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: Any, sampling_params: Any, use_tqdm: Any = True) -> list[Any]:
        self.calls.append((list(prompts), sampling_params, use_tqdm))
        return [
            types.SimpleNamespace(
                prompt_token_ids=list(range(10 + i)),
                outputs=[
                    types.SimpleNamespace(
                        text=f'{{"events": []}} #{i}', token_ids=[1, 2, 3], finish_reason="stop"
                    )
                ],
            )
            for i, _ in enumerate(prompts)
        ]


@pytest.fixture
def fake_vllm(monkeypatch, processor):
    _FakeLLM.instances.clear()
    module = install_fake_vllm(monkeypatch)
    module.LLM = lambda **kwargs: _init_fake(kwargs, processor)  # type: ignore[attr-defined]
    return module


def _init_fake(kwargs: dict[str, Any], processor: Any) -> _FakeLLM:
    llm = _FakeLLM(**kwargs)
    llm.tokenizer = processor.tokenizer
    return llm


def test_describe_submits_all_windows_in_one_generate_call(fake_vllm, processor, monkeypatch):
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "unset")  # restored after the test
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD")
    captioner = VllmCaptioner(
        "/models/qwen", max_new_tokens=300, gpu_memory_utilization=0.4, max_model_len=16384
    )
    (llm,) = _FakeLLM.instances
    # A forked engine core deadlocked on the GPU machine; spawn is the default.
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert llm.kwargs["model"] == "/models/qwen"
    assert llm.kwargs["limit_mm_per_prompt"] == {"image": 0, "video": 1}
    assert llm.kwargs["gpu_memory_utilization"] == 0.4
    assert llm.kwargs["max_model_len"] == 16384

    clips = [make_clip(start_second=s, index=i) for i, s in enumerate((0, 60, 120))]
    outputs = captioner.describe(clips)

    assert len(llm.calls) == 1
    prompts, params, use_tqdm = llm.calls[0]
    assert use_tqdm is False
    assert [p["multi_modal_data"]["video"][0][1]["frames_indices"] for p in prompts] == [
        list(c.window.frame_indices) for c in clips
    ]
    assert [p["prompt"] for p in prompts] == [
        model_inputs.processor_prompt_text(processor.tokenizer, c.window) for c in clips
    ]
    assert params.kwargs["temperature"] == 0.0
    assert params.kwargs["max_tokens"] == 300
    assert params.kwargs["structured_outputs"].kwargs == {
        "grammar": model_inputs.events_grammar_ebnf()
    }
    assert [o.text for o in outputs] == [f'{{"events": []}} #{i}' for i in range(3)]
    assert [o.prompt_tokens for o in outputs] == [10, 11, 12]
    assert all(o.output_tokens == 3 for o in outputs)
    assert captioner.model_id == "/models/qwen"

    captioner.close()
    with pytest.raises(RuntimeError):
        captioner.describe(clips)


def test_unconstrained_captioner_sends_no_grammar(fake_vllm):
    captioner = VllmCaptioner("m", constrained_json=False, max_new_tokens=64)
    captioner.describe([make_clip()])
    (llm,) = _FakeLLM.instances
    params = llm.calls[0][1]
    assert "structured_outputs" not in params.kwargs
    assert captioner.describe([]) == []


def test_module_imports_without_vllm():
    assert "vllm" not in sys.modules or isinstance(sys.modules["vllm"], types.ModuleType)
    source = Path(__file__).resolve().parents[2] / "indexer" / "captioner_vllm.py"
    top_level = [
        line for line in source.read_text().splitlines() if line.startswith(("import ", "from "))
    ]
    assert not any("vllm" in line and "vidseek" not in line for line in top_level)


# --- grounding windows (search refinement) --------------------------------------------


def make_grounding_clip() -> WindowClip:
    clip = make_clip(start_second=95, count=7)
    w = clip.window
    clip.window = Window(w.index, w.start_seconds, w.end_seconds, w.frame_indices, query="a dog")
    return clip


def test_grounding_request_has_the_same_token_layout_as_the_transformers_path(processor):
    clip = make_grounding_clip()
    expected = same_tokens_in_both_engines(processor, clip)
    text = processor.tokenizer.decode(expected, skip_special_tokens=False)
    assert text.count("seconds>") == 4
    assert "<95.5 seconds><|vision_start|>" in text  # absolute: (95 s + 96 s) / 2
    assert model_inputs.user_prompt(clip.window) + "<|im_end|>" in text
    assert '"a dog"' in text and "Localize every distinct event" not in text


def test_grounding_windows_are_constrained_to_one_span(fake_vllm, processor):
    captioner = VllmCaptioner("m", max_new_tokens=64)
    (llm,) = _FakeLLM.instances
    assert decoding_spec(64, True, grounding=True).grammar == model_inputs.span_grammar_ebnf()

    captioner.describe([make_clip(), make_grounding_clip()])
    prompts, params, _ = llm.calls[0]
    assert [p["prompt"] for p in prompts][1] == model_inputs.processor_prompt_text(
        processor.tokenizer, make_grounding_clip().window
    )
    assert [p.kwargs["structured_outputs"].kwargs["grammar"] for p in params] == [
        model_inputs.events_grammar_ebnf(),
        model_inputs.span_grammar_ebnf(),
    ]
    captioner.describe([make_clip()])
    assert not isinstance(llm.calls[1][1], list)  # ingestion batches keep one params object
