"""The ``vllm`` captioner: Qwen3-VL in an in-process ``vllm.LLM`` engine, many windows in flight.

Every window of a :meth:`VllmCaptioner.describe` call goes into one ``LLM.generate``
call, so vLLM schedules them together (continuous batching, chunked prefill). Each
window becomes one offline request (:func:`window_request`)::

    {"prompt": chat_text,
     "multi_modal_data": {"video": [(frames, metadata)]},
     "mm_processor_kwargs": {"do_sample_frames": False, "do_resize": False}}

built only from :mod:`vidseek.indexer.model_inputs`: ``metadata`` carries the window's
**absolute** source frame indices and the real source fps, so vLLM writes absolute
``<t seconds>`` tags (vLLM computes them itself from ``metadata["frames_indices"]`` and
``metadata["fps"]``, as ``Qwen3VLProcessor`` does).

Prompt layout. The chat text names the video with the bare ``<|video_pad|>``
(:func:`~vidseek.indexer.model_inputs.processor_prompt_text`). vLLM 0.26 with a
transformers >= 5.10 processor expands exactly that token into the per-pair blocks,
giving the project's layout with no outer ``<|vision_start|>``/``<|vision_end|>`` pair.
vLLM with an older processor looks for the template's whole
``<|vision_start|><|video_pad|><|vision_end|>`` instead and replaces it, which gives the
same layout; :func:`vllm_prompt_text` hands each kind its own placeholder. The GPU test
(``tests/gpu/test_vllm_captioner.py``) pins the token ids vLLM actually feeds the model
to :func:`~vidseek.indexer.model_inputs.prompt_token_ids`.

Decoding is greedy; with ``constrained_json`` vLLM's xgrammar backend constrains it to
:func:`~vidseek.indexer.model_inputs.events_grammar_ebnf` (the same grammar as the
transformers backend), so both backends accept exactly the same answers; a grounding
window (one with a ``query``) gets :func:`~vidseek.indexer.model_inputs.span_grammar_ebnf`.

vLLM is imported only inside :class:`VllmCaptioner`; everything else here is plain
Python and is unit-tested without vLLM.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vidseek.indexer import model_inputs
from vidseek.indexer.types import CaptionOutput, WindowClip

__all__ = [
    "DecodingSpec",
    "VllmCaptioner",
    "VllmWindowResult",
    "decoding_spec",
    "engine_kwargs",
    "processor_expands_bare_video_token",
    "sampling_params",
    "spawn_engine_workers",
    "vllm_prompt_text",
    "window_request",
    "window_sampling_params",
]

logger = logging.getLogger(__name__)

_TEMPLATE_VIDEO = model_inputs.VISION_START + model_inputs.VIDEO_PAD + model_inputs.VISION_END


@dataclass(frozen=True)
class DecodingSpec:
    """What every window's ``SamplingParams`` say, independent of the vLLM version.

    ``grammar`` is the xgrammar EBNF the answer must match, or ``None`` for free text.
    """

    max_tokens: int
    temperature: float = 0.0
    grammar: str | None = None
    skip_special_tokens: bool = True


@dataclass(frozen=True)
class VllmWindowResult:
    """One window's answer with the prompt token ids vLLM actually fed the model."""

    output: CaptionOutput
    prompt_token_ids: list[int]
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decoding_spec(
    max_new_tokens: int, constrained_json: bool, *, grounding: bool = False
) -> DecodingSpec:
    """Greedy decoding of at most ``max_new_tokens``, grammar-constrained when asked.

    ``grounding`` constrains to the span grammar of a grounding question instead of
    the events grammar.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    grammar = None
    if constrained_json:
        grammar = (
            model_inputs.span_grammar_ebnf() if grounding else model_inputs.events_grammar_ebnf()
        )
    return DecodingSpec(max_tokens=max_new_tokens, temperature=0.0, grammar=grammar)


def processor_expands_bare_video_token() -> bool:
    """Whether the installed ``Qwen3VLProcessor`` expands the bare ``<|video_pad|>``.

    True for transformers >= 5.10, whose processor overrides ``replace_video_token``;
    vLLM 0.26 uses the same test to choose its prompt-replacement target.
    """
    from transformers import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    mixin_impl = getattr(ProcessorMixin, "replace_video_token", None)
    proc_impl = getattr(Qwen3VLProcessor, "replace_video_token", None)
    return proc_impl is not None and proc_impl is not mixin_impl


def vllm_prompt_text(
    tokenizer: model_inputs.ChatTokenizer,
    clip: WindowClip,
    *,
    bare_video_token: bool = True,
) -> str:
    """The chat text vLLM gets for a window, with the video placeholder its processor replaces.

    ``bare_video_token`` (transformers >= 5.10, see
    :func:`processor_expands_bare_video_token`): the video is the bare
    ``<|video_pad|>``. Otherwise it is the template's
    ``<|vision_start|><|video_pad|><|vision_end|>``, which older processors replace as a
    whole. Either way the expanded prompt has no outer vision pair.
    """
    text = model_inputs.processor_prompt_text(tokenizer, clip.window)
    if bare_video_token:
        return text
    return text.replace(model_inputs.VIDEO_PAD, _TEMPLATE_VIDEO)


def window_request(clip: WindowClip, prompt_text: str) -> dict[str, Any]:
    """The vLLM offline request (a ``TextPrompt`` dict) for one window.

    ``frames`` are passed as they are (``(T, H, W, 3)`` uint8, no copy); the metadata
    holds the window's absolute frame indices and the source fps.
    """
    metadata = model_inputs.video_metadata(clip)  # validates the clip (fps, sizes, counts)
    return {
        "prompt": prompt_text,
        "multi_modal_data": {"video": [(clip.frames, metadata)]},
        "mm_processor_kwargs": model_inputs.processor_kwargs(),
    }


DEFAULT_STEP_TOKENS = 16_384
"""vLLM's tokens per scheduler step for the offline engine on an H100/H200."""
SMALLEST_STEP_TOKENS = 8_192
"""The same on an A100 or a GPU with less than 70 GiB."""


def engine_kwargs(
    model: str,
    *,
    gpu_memory_utilization: float,
    max_model_len: int,
    seed: int = 0,
    enforce_eager: bool = False,
    max_video_tokens: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for captioning (``extra`` overrides any of them).

    One video and no image per prompt, which also keeps vLLM's memory profiling to one
    video. The processor cache is off: every window is new, so caching processed
    inputs only costs memory.

    ``max_video_tokens`` is the largest window the engine will be sent (see
    :func:`~vidseek.indexer.model_inputs.max_video_tokens`). vLLM encodes a video in
    one piece and sizes its encoder cache from its tokens per step (16,384 by
    default on an H100/H200, 8,192 on smaller GPUs); a longer window (600 frames of
    256x448 is 33,600 tokens) is refused, so past 8,192 the step is raised to hold
    it, and to at least the H100/H200 default.
    """
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if max_model_len < 1:
        raise ValueError(f"max_model_len must be positive, got {max_model_len}")
    if max_video_tokens >= max_model_len:
        raise ValueError(
            f"a window of up to {max_video_tokens} video tokens does not fit the engine's "
            f"context of {max_model_len} tokens: shorten the windows, lower the frame "
            "pixels or raise the context"
        )
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": model,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": 0, "video": 1},
        "mm_processor_cache_gb": 0,
        "seed": seed,
        "enforce_eager": enforce_eager,
    }
    if max_video_tokens > SMALLEST_STEP_TOKENS:
        kwargs["max_num_batched_tokens"] = max(max_video_tokens, DEFAULT_STEP_TOKENS)
    kwargs.update(extra or {})
    return kwargs


def sampling_params(spec: DecodingSpec, extra: Mapping[str, Any] | None = None) -> Any:
    """``vllm.SamplingParams`` for a spec, across the structured-output API versions."""
    import vllm

    kwargs: dict[str, Any] = {
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        "skip_special_tokens": spec.skip_special_tokens,
        **(extra or {}),
    }
    if spec.grammar is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:  # vLLM < 0.11 named it GuidedDecodingParams
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(grammar=spec.grammar)
        else:
            kwargs["structured_outputs"] = StructuredOutputsParams(grammar=spec.grammar)
    return vllm.SamplingParams(**kwargs)


def window_sampling_params(
    max_new_tokens: int, constrained_json: bool, extra: Mapping[str, Any] | None = None
) -> tuple[Any, Any]:
    """``SamplingParams`` of captioning windows and of grounding windows (refinement).

    With ``constrained_json`` the first answer events, the second one span.
    """
    return (
        sampling_params(decoding_spec(max_new_tokens, constrained_json), extra),
        sampling_params(decoding_spec(max_new_tokens, constrained_json, grounding=True), extra),
    )


def spawn_engine_workers(method: str | None) -> None:
    """Make vLLM start its engine-core process with ``method`` unless already set.

    vLLM forks its engine-core process by default. A fork of a process that has
    already run OpenMP (torch on CPU), tokenizers or other threads can deadlock in
    the child: on the H100 the engine core then idled forever after "worker requested
    memory". Spawn is safe (the main module needs a ``__main__`` guard). ``None``
    leaves vLLM's default.
    """
    if method is not None:
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", method)


class VllmCaptioner:
    """Qwen3-VL served by an in-process ``vllm.LLM`` (implements ``Captioner``).

    ``model`` is a hub id or a local checkpoint directory (the FP8 checkpoint is
    detected by vLLM from its ``quantization_config``). ``engine_options`` are passed
    to ``vllm.LLM`` on top of :func:`engine_kwargs` (e.g. ``load_format="dummy"``,
    ``quantization``, ``hf_overrides``); ``sampling_options`` to every
    ``SamplingParams`` (e.g. ``ignore_eos=True`` for fixed-length benchmark answers).
    Building the engine takes minutes on a real model (weights, profiling, CUDA
    graphs); build one per process and reuse it. ``worker_multiproc_method`` becomes
    ``VLLM_WORKER_MULTIPROC_METHOD`` unless that is already set (``None`` leaves vLLM's
    default, fork, which can deadlock in a multi-threaded process).
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 1024,
        constrained_json: bool = True,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 65536,
        seed: int = 0,
        enforce_eager: bool = False,
        engine_options: Mapping[str, Any] | None = None,
        sampling_options: Mapping[str, Any] | None = None,
        worker_multiproc_method: str | None = "spawn",
    ) -> None:
        self._model_id = model
        # Built first, so a bad max_new_tokens fails before the engine takes minutes to load.
        # Grounding windows (search refinement) are constrained to one span.
        self._sampling_params, self._grounding_params = window_sampling_params(
            max_new_tokens, constrained_json, sampling_options
        )
        bound = model_inputs.max_constrained_output_tokens()
        if constrained_json and max_new_tokens < bound:
            logger.debug(
                "max_new_tokens=%d is below the worst-case constrained answer (%d tokens); "
                "a degenerate answer may be cut short",
                max_new_tokens,
                bound,
            )
        self._bare_video_token = processor_expands_bare_video_token()
        kwargs = engine_kwargs(
            model,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            extra=engine_options,
        )
        spawn_engine_workers(worker_multiproc_method)
        import vllm

        self._llm: Any = vllm.LLM(**kwargs)
        self._tokenizer: Any = self._llm.get_tokenizer()

    @property
    def model_id(self) -> str:
        """The model name recorded with every event."""
        return self._model_id

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer (renders the chat text; decodes prompt ids in tests)."""
        return self._tokenizer

    def requests(self, clips: Sequence[WindowClip]) -> list[dict[str, Any]]:
        """The offline requests :meth:`describe` submits for ``clips``, in order."""
        return [
            window_request(
                clip,
                vllm_prompt_text(self._tokenizer, clip, bare_video_token=self._bare_video_token),
            )
            for clip in clips
        ]

    def describe_detailed(self, clips: Sequence[WindowClip]) -> list[VllmWindowResult]:
        """Caption every clip in one ``LLM.generate`` call; results in clip order."""
        if self._llm is None:
            raise RuntimeError("the captioner is closed")
        if not clips:
            return []
        prompts = self.requests(clips)
        kinds = [model_inputs.is_grounding(clip.window) for clip in clips]
        params: Any = self._sampling_params
        if any(kinds):
            params = [self._grounding_params if k else self._sampling_params for k in kinds]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(clips):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(clips)} windows")
        results: list[VllmWindowResult] = []
        for request_output in outputs:
            completion = request_output.outputs[0]
            prompt_ids = [int(i) for i in (request_output.prompt_token_ids or [])]
            results.append(
                VllmWindowResult(
                    output=CaptionOutput(
                        text=str(completion.text),
                        prompt_tokens=len(prompt_ids),
                        output_tokens=len(completion.token_ids),
                    ),
                    prompt_token_ids=prompt_ids,
                    finish_reason=completion.finish_reason,
                )
            )
        return results

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        """Caption each clip; one raw output per clip, in order (all in flight at once)."""
        return [result.output for result in self.describe_detailed(clips)]

    def close(self) -> None:
        """Shut the engine down and free its GPU memory; the captioner is unusable afterwards."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # vLLM 0.26 has no public close: stopping the engine core frees the worker process.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # best effort: the engine may already be gone
                logger.debug("vLLM engine shutdown failed", exc_info=True)
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
