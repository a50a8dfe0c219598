"""The ``transformers`` captioner: Qwen3-VL in process, on CPU or one GPU.

Inputs come from :mod:`vidseek.indexer.model_inputs` (absolute timestamps, no resize,
no re-sampling, the project's prompt layout). Decoding is greedy and, by default,
constrained with xgrammar to the answers
:func:`~vidseek.indexer.model_inputs.events_grammar_ebnf` accepts, so even a model
that never wants to stop emits JSON that ends with ``<|im_end|>`` within
:func:`~vidseek.indexer.model_inputs.max_constrained_output_tokens` tokens.

xgrammar compiles the description length bound (``maxLength``) into one token mask
per character, 10-50 s on two CPU cores. This backend compiles the grammar with
unbounded descriptions instead (~0.05 s) and enforces ``MAX_DESCRIPTION_CHARS`` itself
while decoding (:class:`_EventsLogitsProcessor`): the answers allowed are the same.

A clip whose window carries a grounding ``query`` is constrained to
:func:`~vidseek.indexer.model_inputs.span_grammar_ebnf` instead; a batch never mixes
the two kinds of question.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vidseek.indexer import model_inputs
from vidseek.indexer.prompt import MAX_DESCRIPTION_CHARS
from vidseek.indexer.types import CaptionOutput, WindowClip

__all__ = ["TransformersCaptioner"]

logger = logging.getLogger(__name__)

_IM_END = "<|im_end|>"
_END_OF_TEXT = "<|endoftext|>"
_DESCRIPTION_OPENING = b'"description": "'
_QUOTE = ord('"')


def _transformers() -> Any:
    """The ``transformers`` module, imported when a captioner is built (it is slow to import)."""
    import transformers

    return transformers


def _torch_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(f"unknown dtype {dtype!r}")


def _is_char_start(byte: int) -> bool:
    """Whether a UTF-8 byte starts a character (is not a continuation byte)."""
    return (byte & 0xC0) != 0x80


@dataclass(frozen=True)
class _Grammar:
    """A compiled grammar and what the description-length cap needs of the vocabulary."""

    compiled: Any
    token_bytes: list[bytes]
    # Characters each token adds to a description before its first '"' (if any).
    chars_before_quote: npt.NDArray[np.int32]


_GRAMMAR_CACHE: dict[tuple[str, int, int, str], _Grammar] = {}
_GRAMMAR_LOCK = threading.Lock()


def _chars_before_quote(tokens: list[bytes]) -> npt.NDArray[np.int32]:
    """Per token: the UTF-8 characters it starts before its first '"' (all if it has none)."""
    lengths = np.fromiter((len(token) for token in tokens), dtype=np.int64, count=len(tokens))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    data = np.frombuffer(b"".join(tokens), dtype=np.uint8)
    char_starts = np.concatenate(([0], np.cumsum((data & 0xC0) != 0x80)))
    quotes = np.flatnonzero(data == _QUOTE)
    following = np.searchsorted(quotes, starts)
    candidate = quotes[np.minimum(following, len(quotes) - 1)] if len(quotes) else ends
    stop = np.where((following < len(quotes)) & (candidate < ends), candidate, ends)
    chars: npt.NDArray[np.int32] = (char_starts[stop] - char_starts[starts]).astype(np.int32)
    return chars


def _grammar(
    model_id: str, tokenizer: Any, vocab_size: int, stop_id: int, ebnf: str | None = None
) -> _Grammar:
    """The compiled grammar ``ebnf`` (default: the events grammar, descriptions unbounded)."""
    import xgrammar as xgr

    if ebnf is None:
        ebnf = model_inputs.events_grammar_ebnf(bound_description=False)
    key = (model_id, vocab_size, stop_id, ebnf)
    with _GRAMMAR_LOCK:
        grammar = _GRAMMAR_CACHE.get(key)
        if grammar is None:
            # <|im_end|> (the chat format's end of turn) is the only stop token the
            # grammar allows, once the JSON is complete.
            info = xgr.TokenizerInfo.from_huggingface(
                tokenizer, vocab_size=vocab_size, stop_token_ids=[stop_id]
            )
            token_bytes = list(info.decoded_vocab)
            grammar = _Grammar(
                compiled=xgr.GrammarCompiler(info).compile_grammar(ebnf),
                token_bytes=token_bytes,
                chars_before_quote=_chars_before_quote(token_bytes),
            )
            _GRAMMAR_CACHE[key] = grammar
    return grammar


class _DescriptionTracker:
    """Follows the bytes of one answer: inside a description value, and how many characters so far.

    The grammar allows no escapes in descriptions, so a description is everything
    between ``"description": "`` and the next ``"``.
    """

    def __init__(self) -> None:
        self.inside = False
        self.chars = 0
        self._tail = b""

    def feed(self, data: bytes) -> None:
        """Account for the bytes of one more token."""
        for byte in data:
            if self.inside:
                if byte == _QUOTE:
                    self.inside = False
                    self._tail = b'"'
                elif _is_char_start(byte):
                    self.chars += 1
                continue
            self._tail = (self._tail + bytes((byte,)))[-len(_DESCRIPTION_OPENING) :]
            if self._tail == _DESCRIPTION_OPENING:
                self.inside = True
                self.chars = 0


class _EventsLogitsProcessor:
    """Masks logits to the events grammar, with descriptions capped at ``MAX_DESCRIPTION_CHARS``.

    One instance per ``generate()`` call (it holds per-row matchers). Rows stop being
    constrained once their matcher has accepted the stop token.
    """

    def __init__(
        self, grammar: _Grammar, max_description_chars: int = MAX_DESCRIPTION_CHARS
    ) -> None:
        import torch

        self._grammar = grammar
        self._limit = max_description_chars
        self._chars = torch.from_numpy(grammar.chars_before_quote)
        self._matchers: list[Any] = []
        self._trackers: list[_DescriptionTracker] = []
        self._bitmask: Any = None
        self._prompt_length = -1

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch
        import xgrammar as xgr

        rows = int(input_ids.shape[0])
        if not self._matchers:
            self._matchers = [xgr.GrammarMatcher(self._grammar.compiled) for _ in range(rows)]
            self._trackers = [_DescriptionTracker() for _ in range(rows)]
            vocab_size = self._grammar.compiled.tokenizer_info.vocab_size
            self._bitmask = xgr.allocate_token_bitmask(rows, vocab_size)
            self._prompt_length = int(input_ids.shape[1])
        elif int(input_ids.shape[1]) > self._prompt_length:
            for row in range(rows):
                matcher = self._matchers[row]
                if matcher.is_terminated():
                    continue
                token = int(input_ids[row, -1])
                if not matcher.accept_token(token):
                    raise RuntimeError(f"generated token {token} violates the events grammar")
                self._trackers[row].feed(self._grammar.token_bytes[token])

        for row, matcher in enumerate(self._matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._bitmask, row)
        device = scores.device
        # xgrammar applies masks on CPU and CUDA tensors only.
        masked = scores if device.type in ("cuda", "cpu") else scores.to("cpu")
        xgr.apply_token_bitmask_inplace(masked, self._bitmask.to(masked.device))
        if self._chars.device != masked.device:
            self._chars = self._chars.to(masked.device)
        for row, tracker in enumerate(self._trackers):
            if tracker.inside and not self._matchers[row].is_terminated():
                too_long = self._chars > self._limit - tracker.chars
                masked[row, too_long] = -torch.inf
        return masked.to(device)


class TransformersCaptioner:
    """A Qwen3-VL model run with Hugging Face ``transformers`` (implements ``Captioner``).

    ``model_id`` is a local checkpoint directory or a hub id (loaded with
    ``from_pretrained``). ``dtype`` is a ``torch.dtype``, its name, or ``"auto"``
    (bfloat16 on CUDA, float32 on CPU). ``constrained_json=False`` decodes freely: the
    raw text may then be anything, and is cut at ``max_new_tokens``.
    """

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "cpu",
        dtype: Any = "auto",
        max_new_tokens: int = 2048,
        constrained_json: bool = True,
        batch_size: int = 1,
    ) -> None:
        import torch

        transformers = _transformers()

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_id = model_id
        self._device = torch.device(device)
        self._max_new_tokens = max_new_tokens
        self._batch_size = batch_size

        self._processor: Any = transformers.AutoProcessor.from_pretrained(model_id)
        tokenizer = self._processor.tokenizer
        # Batches must be padded on the left so that every prompt ends where generation
        # starts.
        tokenizer.padding_side = "left"
        video_processor = self._processor.video_processor
        if (
            hasattr(video_processor, "cap_pixels_per_frame")
            and video_processor.cap_pixels_per_frame is None
        ):
            # Only affects resizing, which is off; set so transformers stops warning.
            video_processor.cap_pixels_per_frame = False

        self._model: Any = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
            model_id, dtype=_torch_dtype(dtype, device)
        )
        self._model.to(self._device).eval()

        self._im_end_id = self._token_id(_IM_END)
        self._stop_ids = [self._im_end_id, self._token_id(_END_OF_TEXT)]
        pad_id = tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else self._stop_ids[1]

        self._constrained = constrained_json
        self._grammars: dict[bool, _Grammar] = {}
        if constrained_json:
            self._grammar_for(grounding=False)
            bound = model_inputs.max_constrained_output_tokens()
            if max_new_tokens < bound:
                logger.debug(
                    "max_new_tokens=%d is below the longest answer the grammar allows "
                    "(%d tokens): a degenerate answer can be cut short",
                    max_new_tokens,
                    bound,
                )

    def _grammar_for(self, *, grounding: bool) -> _Grammar:
        """The compiled grammar of one kind of question (the span grammar compiles on first use)."""
        grammar = self._grammars.get(grounding)
        if grammar is None:
            ebnf = model_inputs.span_grammar_ebnf() if grounding else None
            vocab_size = int(self._model.config.get_text_config().vocab_size)
            grammar = _grammar(
                self._model_id, self._processor.tokenizer, vocab_size, self._im_end_id, ebnf
            )
            self._grammars[grounding] = grammar
        return grammar

    def _token_id(self, token: str) -> int:
        token_id = self._processor.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"{self._model_id}: the tokenizer has no {token}")
        return token_id

    @property
    def model_id(self) -> str:
        """The model name recorded with every event."""
        return self._model_id

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        """Caption the clips, ``batch_size`` per ``generate()``; one output per clip, in order."""
        if self._model is None:
            raise RuntimeError("the captioner is closed")
        outputs: list[CaptionOutput] = []
        start = 0
        while start < len(clips):
            # A batch holds one kind of question (one grammar): dense captions or grounding.
            grounding = model_inputs.is_grounding(clips[start].window)
            end = start + 1
            while (
                end < len(clips)
                and end - start < self._batch_size
                and model_inputs.is_grounding(clips[end].window) == grounding
            ):
                end += 1
            outputs.extend(self._describe_batch(clips[start:end], grounding))
            start = end
        return outputs

    def _describe_batch(self, clips: Sequence[WindowClip], grounding: bool) -> list[CaptionOutput]:
        import torch

        transformers = _transformers()

        tokenizer = self._processor.tokenizer
        texts = [model_inputs.processor_prompt_text(tokenizer, clip.window) for clip in clips]
        metadata = [model_inputs.video_metadata(clip) for clip in clips]  # validates the clips
        # Channels-first: the channel axis of (T, H, W, 3) arrays is guessed, (T, 3, H, W) is not.
        videos = [torch.from_numpy(clip.frames).permute(0, 3, 1, 2) for clip in clips]
        inputs = self._processor(
            text=texts,
            videos=videos,
            video_metadata=metadata,
            padding=True,
            return_tensors="pt",
            **model_inputs.processor_kwargs(),
        ).to(self._device)

        generation_config = transformers.GenerationConfig(
            max_new_tokens=self._max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self._stop_ids,
            pad_token_id=self._pad_id,
        )
        processors = transformers.LogitsProcessorList()
        if self._constrained:
            processors.append(_EventsLogitsProcessor(self._grammar_for(grounding=grounding)))

        with torch.inference_mode():
            generated = self._model.generate(
                **inputs, generation_config=generation_config, logits_processor=processors
            )

        prompt_length = int(inputs["input_ids"].shape[1])
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results: list[CaptionOutput] = []
        for row, count in zip(generated[:, prompt_length:].tolist(), prompt_tokens, strict=True):
            answer, output_tokens = self._split_answer(row)
            results.append(
                CaptionOutput(
                    text=tokenizer.decode(answer, skip_special_tokens=False),
                    prompt_tokens=int(count),
                    output_tokens=output_tokens,
                )
            )
        return results

    def _split_answer(self, row: list[int]) -> tuple[list[int], int]:
        """The answer (tokens before the first stop) and the tokens generated, stop included."""
        for position, token in enumerate(row):
            if token in self._stop_ids:
                return row[:position], position + 1
        return row, len(row)

    def close(self) -> None:
        """Release the model; ``describe`` raises afterwards."""
        on_cuda = self._device.type == "cuda"
        self._model = None
        self._processor = None
        self._grammars = {}
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
