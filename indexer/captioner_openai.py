"""The ``openai`` captioner: Qwen3-VL behind an OpenAI-compatible server such as ``vllm serve``.

For ingestion workers that call vLLM replicas over HTTP (``POST {base_url}/chat/completions``),
with nothing but the standard library.

How a window reaches the server with absolute timestamps (vLLM 0.26)
--------------------------------------------------------------------
The server's own video loader decodes a file or URL and keeps 32 frames by default,
numbered from 0 of what it decoded: timestamps would be wrong and frames lost. Instead
the window's **pre-sampled** frames travel in the request:

- the video part is a ``video_url`` whose URL is ``data:video/jpeg;base64,F0,F1,...``:
  one base64 image per frame, comma-separated. vLLM's ``VideoMediaIO.load_base64`` has
  a dedicated branch for ``video/jpeg`` that decodes each part as an image (with PIL,
  so PNG parts work too: ``frame_format="png"`` is lossless) and stacks them, without
  any re-sampling;
- the request's ``media_io_kwargs`` give that branch the metadata:
  ``{"video": {"num_frames": T, "fps": <source fps>, "frames_indices": [<absolute
  indices>], "total_num_frames": ..., "duration": ...}}``. ``num_frames`` must be the
  frame count (the default 32 would drop frames); ``fps`` and ``frames_indices`` are
  what vLLM's Qwen3-VL processor turns into ``<t seconds>`` (``index / fps``), so the
  tags are absolute video time, exactly as in the offline path;
- ``mm_processor_kwargs`` is ``{"do_sample_frames": False, "do_resize": False}``.

Prompt layout
-------------
The server renders the chat template itself. The stock Qwen3-VL template writes the
video as ``<|vision_start|><|video_pad|><|vision_end|>``, and vLLM 0.26 with
transformers >= 5.10 expands only the ``<|video_pad|>`` in it, leaving an outer vision
pair that the offline paths do not have (see :mod:`vidseek.indexer.model_inputs`). This
client therefore renders the video as the bare ``<|video_pad|>`` with
:func:`serving_chat_template` (the packaged template, one placeholder changed), either

- sent with every request (``send_chat_template=True``, the default; the server must run
  with ``--trust-request-chat-template``), or
- installed on the server (``vllm serve ... --chat-template FILE``, FILE written by
  ``python -m vidseek.indexer.captioner_openai chat-template FILE``) with
  ``send_chat_template=False``.

Either way the server-rendered text equals
:func:`~vidseek.indexer.model_inputs.processor_prompt_text` and the model reads the same
tokens as with the offline backends. With ``verify_prompt`` (default) every request
asks for ``return_token_ids`` and :func:`check_prompt_layout` checks the prompt the
server tokenised: one vision block per frame pair, no outer pair, no dropped or
resized frames (and, given a tokenizer, every token, ``<t seconds>`` tags included).
A server that breaks this fails loudly with :class:`PromptLayoutError`.

Decoding is greedy. With ``constrained_json`` the answer is constrained by vLLM's
``structured_outputs={"grammar": events_grammar_ebnf()}`` (the grammar of the other
backends) or, for servers other than vLLM, by a standard
``response_format={"type": "json_schema", ...}`` of ``EVENTS_JSON_SCHEMA``. A grounding
window (one with a ``query``) is constrained to one span instead
(:func:`~vidseek.indexer.model_inputs.answer_grammar_ebnf`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vidseek.indexer import model_inputs
from vidseek.indexer.engine import INGEST_PRIORITY, EngineStats
from vidseek.indexer.replicas import Replicas
from vidseek.indexer.types import CaptionOutput, WindowClip

__all__ = [
    "VIDEO_PAD_ID",
    "VISION_END_ID",
    "VISION_START_ID",
    "ChatAnswer",
    "OpenAICaptioner",
    "OpenAICaptionerError",
    "PromptLayoutError",
    "chat_request_body",
    "chat_url",
    "check_prompt_layout",
    "frames_data_url",
    "media_io_kwargs",
    "parse_chat_response",
    "serving_chat_template",
]

logger = logging.getLogger(__name__)

# Token ids of every Qwen3-VL checkpoint's tokenizer (tokenizer_config.json).
VISION_START_ID = 151652
VISION_END_ID = 151653
VIDEO_PAD_ID = 151656

_TEMPLATE_VIDEO = model_inputs.VISION_START + model_inputs.VIDEO_PAD + model_inputs.VISION_END
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

FrameFormat = Literal["jpeg", "png"]
StructuredOutput = Literal["vllm_grammar", "json_schema"]


class OpenAICaptionerError(RuntimeError):
    """The server failed a request (HTTP error, bad answer, unreachable)."""


class PromptLayoutError(OpenAICaptionerError):
    """The server fed the model a prompt other than the one this project specifies."""


@dataclass(frozen=True)
class ChatAnswer:
    """One parsed chat completion."""

    output: CaptionOutput
    prompt_token_ids: list[int] | None
    finish_reason: str | None


def serving_chat_template() -> str:
    """The packaged Qwen3-VL template, with a video rendered as the bare ``<|video_pad|>``.

    Identical to :func:`~vidseek.indexer.model_inputs.chat_template` except for the video
    placeholder (in user and tool turns), so a vLLM server using it renders
    :func:`~vidseek.indexer.model_inputs.processor_prompt_text` for a window.
    """
    template = model_inputs.chat_template()
    if _TEMPLATE_VIDEO not in template:
        raise ValueError("the chat template renders no video placeholder")
    return template.replace(_TEMPLATE_VIDEO, model_inputs.VIDEO_PAD)


def chat_url(base_url: str) -> str:
    """The chat-completions endpoint of a server given as ``http://host:port`` or ``.../v1``."""
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def _encode_frame(frame: npt.NDArray[np.uint8], frame_format: FrameFormat, quality: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(frame), mode="RGB")
    if frame_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    elif frame_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        raise ValueError(f"frame_format must be 'jpeg' or 'png', got {frame_format!r}")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def frames_data_url(
    frames: npt.NDArray[np.uint8], frame_format: FrameFormat = "jpeg", quality: int = 95
) -> str:
    """A ``data:video/jpeg;base64,`` URL of comma-separated base64 frames (vLLM's frame-list video).

    The media type stays ``video/jpeg`` for PNG frames too: it selects vLLM's frame-list
    branch, which decodes each part with PIL whatever its format.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    parts = [_encode_frame(frame, frame_format, quality) for frame in frames]
    return "data:video/jpeg;base64," + ",".join(parts)


def media_io_kwargs(clip: WindowClip) -> dict[str, dict[str, Any]]:
    """The request's ``media_io_kwargs``: the metadata vLLM attaches to the frame-list video."""
    metadata = model_inputs.video_metadata(clip)
    return {
        "video": {
            "num_frames": len(metadata["frames_indices"]),
            "fps": metadata["fps"],
            "frames_indices": metadata["frames_indices"],
            "total_num_frames": metadata["total_num_frames"],
            "duration": metadata["duration"],
        }
    }


def chat_request_body(
    clip: WindowClip,
    model: str,
    *,
    max_tokens: int,
    constrained_json: bool = True,
    structured_output: StructuredOutput = "vllm_grammar",
    send_chat_template: bool = True,
    return_token_ids: bool = True,
    frame_format: FrameFormat = "jpeg",
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """The JSON body of the chat-completions request for one window."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    video_item = {
        "type": "video_url",
        "video_url": {"url": frames_data_url(clip.frames, frame_format, jpeg_quality)},
    }
    body: dict[str, Any] = {
        "model": model,
        "messages": model_inputs.chat_messages(clip.window, video_item),
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "media_io_kwargs": media_io_kwargs(clip),
        "mm_processor_kwargs": model_inputs.processor_kwargs(),
        "skip_special_tokens": True,
    }
    if send_chat_template:
        body["chat_template"] = serving_chat_template()
    if return_token_ids:
        body["return_token_ids"] = True
    if constrained_json:
        if structured_output == "vllm_grammar":
            body["structured_outputs"] = {"grammar": model_inputs.answer_grammar_ebnf(clip.window)}
        elif structured_output == "json_schema":
            name, schema = model_inputs.answer_json_schema(clip.window)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        else:
            raise ValueError(f"unknown structured_output {structured_output!r}")
    return body


def parse_chat_response(payload: Any) -> ChatAnswer:
    """The first choice of a chat-completions response (vLLM's extra ``prompt_token_ids`` kept)."""
    if not isinstance(payload, dict):
        raise OpenAICaptionerError(f"expected a JSON object, got {type(payload).__name__}")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise OpenAICaptionerError(f"response has no choices: {_clip_text(json.dumps(payload))}")
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    usage = payload.get("usage") or {}
    prompt_ids = payload.get("prompt_token_ids")
    completion_ids = choice.get("token_ids")
    prompt_tokens = usage.get("prompt_tokens")
    output_tokens = usage.get("completion_tokens")
    if prompt_tokens is None and isinstance(prompt_ids, list):
        prompt_tokens = len(prompt_ids)
    if output_tokens is None and isinstance(completion_ids, list):
        output_tokens = len(completion_ids)
    return ChatAnswer(
        output=CaptionOutput(
            text=content if isinstance(content, str) else "",
            prompt_tokens=int(prompt_tokens or 0),
            output_tokens=int(output_tokens or 0),
        ),
        prompt_token_ids=[int(i) for i in prompt_ids] if isinstance(prompt_ids, list) else None,
        finish_reason=choice.get("finish_reason"),
    )


def check_prompt_layout(
    prompt_token_ids: Sequence[int],
    clip: WindowClip,
    tokenizer: model_inputs.ChatTokenizer | None = None,
) -> None:
    """Raise :class:`PromptLayoutError` unless the server's prompt has this project's layout.

    Without a tokenizer the check is structural: exactly one vision block
    ``<|vision_start|><|video_pad|>*N<|vision_end|>`` per frame pair, with ``N`` the pads
    of the window's frame size, and nothing else between the blocks' markers (so no
    outer pair, no dropped, re-sampled or resized frames). With the model's tokenizer
    every token must equal :func:`~vidseek.indexer.model_inputs.prompt_token_ids`.
    """
    count, height, width = model_inputs.check_clip(clip)
    pairs = math.ceil(count / model_inputs.TEMPORAL_PATCH_SIZE)
    pads = model_inputs.video_tokens_per_frame_pair(height, width)
    ids = list(prompt_token_ids)
    starts = [i for i, token in enumerate(ids) if token == VISION_START_ID]
    ends = [i for i, token in enumerate(ids) if token == VISION_END_ID]
    if len(starts) == pairs + 1 and len(ends) == pairs + 1:
        raise PromptLayoutError(
            "the server wraps the video in an outer <|vision_start|>/<|vision_end|> pair: it "
            "rendered the stock chat template. Start vLLM with --trust-request-chat-template "
            "(this client then sends its template) or with --chat-template set to the file "
            "written by `python -m vidseek.indexer.captioner_openai chat-template FILE`."
        )
    if len(starts) != pairs or len(ends) != pairs:
        raise PromptLayoutError(
            f"expected {pairs} vision blocks (one per frame pair of {count} frames), the server "
            f"prompt has {len(starts)} <|vision_start|> and {len(ends)} <|vision_end|>: frames "
            "were dropped or re-sampled (media_io_kwargs / mm_processor_kwargs ignored?)"
        )
    for start, end in zip(starts, ends, strict=True):
        block = ids[start + 1 : end]
        if len(block) != pads or any(token != VIDEO_PAD_ID for token in block):
            raise PromptLayoutError(
                f"a vision block holds {len(block)} tokens, expected {pads} <|video_pad|> for "
                f"{width}x{height} frames: the server resized the frames (do_resize ignored?)"
            )
    if tokenizer is not None:
        expected = model_inputs.prompt_token_ids(tokenizer, clip)
        if ids != expected:
            position = next(
                (i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b),
                min(len(ids), len(expected)),
            )
            raise PromptLayoutError(
                f"server prompt differs from the project's at token {position} "
                f"(server {len(ids)} tokens, expected {len(expected)}): "
                f"server ...{_decode(tokenizer, ids[position : position + 12])!r}, "
                f"expected ...{_decode(tokenizer, expected[position : position + 12])!r}"
            )


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    decode = getattr(tokenizer, "decode", None)
    if not callable(decode):
        return str(list(ids))
    return str(decode(list(ids), skip_special_tokens=False))


def _clip_text(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _error_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return _clip_text(text)
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and "message" in error:
            return _clip_text(str(error["message"]))
        if "detail" in payload:
            return _clip_text(str(payload["detail"]))
    return _clip_text(text)


class OpenAICaptioner:
    """Qwen3-VL behind an OpenAI-compatible chat-completions server.

    Implements both ``Captioner`` (:meth:`describe`) and ``CaptionEngine``
    (:meth:`submit`, one window per call from any thread).
    ``base_url`` is the server root or its ``/v1``, or several of them (a sequence or a
    comma-separated string): replicas of the same model, each request going to the
    healthy one with the fewest requests open, a failed request retried on another
    (:mod:`vidseek.indexer.replicas`). ``model`` is the served model name
    (also recorded with every event). Ingestion windows are sent concurrently, at most
    ``max_concurrency`` at a time (keep it at least the engine's in-flight cap, so the
    server sees every window in flight); refinement windows (a priority below
    ``INGEST_PRIORITY``) have their own ``max_concurrency // 4 + 1`` connections, so they
    never queue behind ingestion here, and with ``send_priority`` the request carries its
    priority for a server started with ``--scheduling-policy priority``. Transient
    failures (connection errors, 408/429/5xx) are retried ``max_retries`` times with
    exponential backoff.
    ``tokenizer`` (optional, the model's) makes :func:`check_prompt_layout` compare every
    prompt token. See the module docstring for the server flags this needs.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key: str = "EMPTY",
        *,
        max_new_tokens: int = 1024,
        constrained_json: bool = True,
        structured_output: StructuredOutput = "vllm_grammar",
        send_chat_template: bool = True,
        verify_prompt: bool = True,
        frame_format: FrameFormat = "jpeg",
        jpeg_quality: int = 95,
        max_concurrency: int = 16,
        timeout: float = 600.0,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
        tokenizer: model_inputs.ChatTokenizer | None = None,
        send_priority: bool = False,
        replica_cooldown: float = 10.0,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be positive, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if frame_format not in ("jpeg", "png"):
            raise ValueError(f"frame_format must be 'jpeg' or 'png', got {frame_format!r}")
        if structured_output not in ("vllm_grammar", "json_schema"):
            raise ValueError(f"unknown structured_output {structured_output!r}")
        urls = [u.strip() for u in base_url.split(",")] if isinstance(base_url, str) else base_url
        self._replicas = Replicas([chat_url(u) for u in urls if u.strip()], replica_cooldown)
        self._url = self._replicas.urls[0]
        self._model = model
        self._api_key = api_key
        self._max_new_tokens = max_new_tokens
        self._constrained_json = constrained_json
        self._structured_output: StructuredOutput = structured_output
        self._send_chat_template = send_chat_template
        self._verify_prompt = verify_prompt
        self._frame_format: FrameFormat = frame_format
        self._jpeg_quality = jpeg_quality
        self._max_concurrency = max_concurrency
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._tokenizer = tokenizer
        self._warned_unverified = False
        self._closed = False
        self._send_priority = send_priority
        self._stats = EngineStats()
        self._pools: dict[bool, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The model name recorded with every event."""
        return self._model

    @property
    def url(self) -> str:
        """The chat-completions endpoint of the first replica."""
        return self._url

    @property
    def urls(self) -> list[str]:
        """The chat-completions endpoints of every replica."""
        return list(self._replicas.urls)

    @property
    def stats(self) -> EngineStats:
        """Counters of the windows sent through :meth:`submit`."""
        return self._stats

    def request_body(self, clip: WindowClip, priority: int = INGEST_PRIORITY) -> dict[str, Any]:
        """The JSON body sent for one window."""
        body = chat_request_body(
            clip,
            self._model,
            max_tokens=self._max_new_tokens,
            constrained_json=self._constrained_json,
            structured_output=self._structured_output,
            send_chat_template=self._send_chat_template,
            return_token_ids=self._verify_prompt,
            frame_format=self._frame_format,
            jpeg_quality=self._jpeg_quality,
        )
        if self._send_priority:
            body["priority"] = priority
        return body

    def submit(self, clip: WindowClip, *, priority: int = INGEST_PRIORITY) -> Future[CaptionOutput]:
        """Send one window on a pooled connection; the future holds its answer."""
        if self._closed:
            raise RuntimeError("the captioner is closed")
        urgent = priority < INGEST_PRIORITY
        with self._pools_lock:
            pool = self._pools.get(urgent)
            if pool is None:
                workers = self._max_concurrency // 4 + 1 if urgent else self._max_concurrency
                pool = ThreadPoolExecutor(
                    max_workers=workers,
                    thread_name_prefix="vidseek-openai-refine" if urgent else "vidseek-openai",
                )
                self._pools[urgent] = pool
        self._stats.started()
        return pool.submit(self._submitted_one, clip, priority)

    def _submitted_one(self, clip: WindowClip, priority: int) -> CaptionOutput:
        output: CaptionOutput | None = None
        started = time.perf_counter()
        try:
            output = self._describe_one(clip, priority).output
            return output
        finally:
            self._stats.finished(output, generate_s=time.perf_counter() - started)

    def describe_detailed(self, clips: Sequence[WindowClip]) -> list[ChatAnswer]:
        """Caption every clip (concurrently); answers in clip order."""
        if self._closed:
            raise RuntimeError("the captioner is closed")
        if not clips:
            return []
        workers = min(self._max_concurrency, len(clips))
        if workers == 1:
            return [self._describe_one(clip) for clip in clips]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vidseek-openai") as pool:
            return list(pool.map(self._describe_one, clips))

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        """Caption each clip; one raw output per clip, in order."""
        return [answer.output for answer in self.describe_detailed(clips)]

    def close(self) -> None:
        """Stop the connection pools (waiting windows are dropped); later calls raise."""
        self._closed = True
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)

    def _describe_one(self, clip: WindowClip, priority: int = INGEST_PRIORITY) -> ChatAnswer:
        answer = parse_chat_response(self._post(self.request_body(clip, priority)))
        if self._verify_prompt:
            if answer.prompt_token_ids is not None:
                check_prompt_layout(answer.prompt_token_ids, clip, self._tokenizer)
            elif not self._warned_unverified:
                self._warned_unverified = True
                logger.warning(
                    "%s returned no prompt_token_ids (not vLLM >= 0.10?): the prompt layout "
                    "and timestamps the model read cannot be verified",
                    self._url,
                )
        return answer

    def _post(self, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {self._api_key}",
        }
        attempt = 0
        failed_on: list[str] = []
        while True:
            url = self._replicas.acquire(avoid=failed_on)
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as error:
                message = _error_message(error.read())
                transient = error.code in _RETRY_STATUSES
                self._replicas.release(url, failed=transient)
                if transient and attempt < self._max_retries:
                    failed_on.append(url)
                    self._before_retry(attempt, url, f"HTTP {error.code}: {message}", failed_on)
                    attempt += 1
                    continue
                raise OpenAICaptionerError(
                    f"{url} answered HTTP {error.code}: {message}"
                ) from error
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                self._replicas.release(url, failed=True)
                if attempt < self._max_retries:
                    failed_on.append(url)
                    self._before_retry(attempt, url, str(error), failed_on)
                    attempt += 1
                    continue
                raise OpenAICaptionerError(f"{url} unreachable: {error}") from error
            self._replicas.release(url)
            try:
                return json.loads(raw)
            except ValueError as error:
                raise OpenAICaptionerError(
                    f"{url} answered non-JSON: {_clip_text(raw.decode('utf-8', 'replace'))}"
                ) from error

    def _before_retry(self, attempt: int, url: str, reason: str, failed_on: list[str]) -> None:
        """Retry at once on another replica; back off when every one has failed this request."""
        if any(u not in failed_on for u in self._replicas.urls):
            logger.warning("%s failed (%s); retrying on another replica", url, reason)
            return
        self._sleep_before_retry(attempt, reason)

    def _sleep_before_retry(self, attempt: int, reason: str) -> None:
        delay = self._retry_backoff * (2**attempt)
        logger.warning(
            "%s failed (%s); retry %d/%d in %.1f s",
            self._url,
            reason,
            attempt + 1,
            self._max_retries,
            delay,
        )
        time.sleep(delay)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m vidseek.indexer.captioner_openai chat-template [FILE]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "chat-template" or len(args) > 2:
        print(
            "usage: python -m vidseek.indexer.captioner_openai chat-template [FILE]\n"
            "  writes the template for `vllm serve --chat-template FILE` (stdout without FILE)",
            file=sys.stderr,
        )
        return 2
    template = serving_chat_template()
    if len(args) == 2:
        Path(args[1]).write_text(template, encoding="utf-8")
    else:
        sys.stdout.write(template)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
