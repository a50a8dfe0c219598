"""The OpenAI-server captioner's client protocol, against a fake vLLM-like HTTP server.

The server here is a stand-in (stdlib ``http.server`` on 127.0.0.1, port 0): it records
each request and answers the way vLLM 0.26's ``/v1/chat/completions`` does, computing
the prompt token ids it reports from the request alone, with a transcription of what
vLLM does (render the request's or the stock chat template with the video part as
``{"type": "video"}``, decode the ``data:video/jpeg`` frame list with the request's
``media_io_kwargs``, expand the bare ``<|video_pad|>`` into per-pair blocks). These tests
therefore check the client's side of the protocol, not a real server.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vidseek.indexer import model_inputs
from vidseek.indexer.captioner_openai import (
    VIDEO_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
    OpenAICaptioner,
    OpenAICaptionerError,
    PromptLayoutError,
    chat_url,
    frames_data_url,
    main,
    serving_chat_template,
)
from vidseek.indexer.prompt import EVENTS_JSON_SCHEMA, SPAN_JSON_SCHEMA
from vidseek.indexer.types import Window, WindowClip

ANSWER = '{"events": [{"start": 421.0, "end": 423.5, "description": "A door opens."}]}'


def make_clip(start_second: int = 420, count: int = 6, fps: float = 25.0) -> WindowClip:
    """A mid-video window of smooth frames (so JPEG keeps them close), 64x96."""
    indices = tuple(round((start_second + k) * fps) for k in range(count))
    ramp = np.linspace(0, 255, 96, dtype=np.float64)
    frames = np.empty((count, 64, 96, 3), dtype=np.uint8)
    for k in range(count):
        frames[k, :, :, 0] = ramp.astype(np.uint8)
        frames[k, :, :, 1] = 40 * k
        frames[k, :, :, 2] = 255 - ramp.astype(np.uint8)
    window = Window(
        index=3, start_seconds=start_second, end_seconds=start_second + count, frame_indices=indices
    )
    return WindowClip(window=window, frames=frames, fps=fps, total_frames=round(3600 * fps))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tests.support.tiny_qwen import build_qwen_tokenizer

    return build_qwen_tokenizer()


# --- a vLLM-like fake server ----------------------------------------------------------


def decode_frames(url: str, num_frames: int) -> np.ndarray:
    """vLLM 0.26 ``VideoMediaIO.load_base64`` for ``video/jpeg``: comma-separated images."""
    from PIL import Image

    header, data = url.split(",", 1)
    assert header == "data:video/jpeg;base64"
    parts = data.split(",", num_frames)[:num_frames] if num_frames > 0 else data.split(",")
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB")) for p in parts]
    )


def server_prompt_ids(
    tokenizer: Any,
    body: dict[str, Any],
    *,
    ignore_num_frames: bool = False,
    resize_to: tuple[int, int] | None = None,
) -> list[int]:
    """The prompt token ids vLLM 0.26 (transformers >= 5.10) would feed the model."""
    template = body.get("chat_template") or model_inputs.chat_template()
    messages = []
    video_url = None
    for message in body["messages"]:
        parts = []
        for part in message["content"]:
            if part["type"] == "video_url":
                video_url = part["video_url"]["url"]
                parts.append({"type": "video"})
            else:
                parts.append(part)
        messages.append({"role": message["role"], "content": parts})
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert video_url is not None
    video_kwargs = (body.get("media_io_kwargs") or {}).get("video", {})
    num_frames = 2 if ignore_num_frames else int(video_kwargs.get("num_frames", 32))
    frames = decode_frames(video_url, num_frames)
    fps = float(video_kwargs.get("fps", 1))
    indices = list(video_kwargs.get("frames_indices") or range(len(frames)))[: len(frames)]
    if len(indices) % 2:
        indices.append(indices[-1])
    seconds = [i / fps for i in indices]
    stamps = [(seconds[i] + seconds[i + 1]) / 2 for i in range(0, len(seconds), 2)]
    height, width = resize_to or frames.shape[1:3]
    pads = (height // 32) * (width // 32)
    replacement: list[int] = []
    for t in stamps:
        replacement += tokenizer.encode(f"<{t:.1f} seconds>", add_special_tokens=False)
        replacement += [VISION_START_ID] + [VIDEO_PAD_ID] * pads + [VISION_END_ID]
    ids: list[int] = list(tokenizer.encode(text, add_special_tokens=False))
    position = ids.index(VIDEO_PAD_ID)
    return ids[:position] + replacement + ids[position + 1 :]


def vllm_answer(body: dict[str, Any], prompt_ids: list[int] | None, text: str = ANSWER) -> Any:
    payload: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "token_ids": [1, 2, 3, 4, 5, 6, 7],
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt_ids or []) or 1234,
            "completion_tokens": 7,
            "total_tokens": len(prompt_ids or []) + 7,
        },
    }
    if prompt_ids is not None:
        payload["prompt_token_ids"] = prompt_ids
    return payload


Responder = Callable[[dict[str, Any]], tuple[int, Any]]


class FakeServer:
    """Records requests; answers each with ``responder(body) -> (status, json)``."""

    def __init__(self, responder: Responder) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.responder = responder
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                server.requests.append((self.path, dict(self.headers), body))
                status, payload = server.responder(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], FakeServer]]:
    servers: list[FakeServer] = []

    def start(responder: Responder) -> FakeServer:
        server = FakeServer(responder)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def like_vllm(tokenizer: Any, **options: Any) -> Responder:
    return lambda body: (200, vllm_answer(body, server_prompt_ids(tokenizer, body, **options)))


# --- the request ----------------------------------------------------------------------


def test_client_sends_presampled_frames_with_absolute_metadata(serve, tokenizer):
    server = serve(like_vllm(tokenizer))
    clip = make_clip()
    captioner = OpenAICaptioner(
        server.base_url,
        "Qwen/Qwen3-VL-4B-Instruct-FP8",
        api_key="k",
        max_new_tokens=700,
        frame_format="png",
    )
    captioner.describe([clip])

    ((path, headers, body),) = server.requests
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k"
    assert body["model"] == "Qwen/Qwen3-VL-4B-Instruct-FP8"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 700
    assert body["mm_processor_kwargs"] == {"do_sample_frames": False, "do_resize": False}
    assert body["media_io_kwargs"] == {
        "video": {
            "num_frames": 6,
            "fps": 25.0,
            "frames_indices": [10500, 10525, 10550, 10575, 10600, 10625],
            "total_num_frames": 90000,
            "duration": 3600.0,
        }
    }
    assert body["structured_outputs"] == {"grammar": model_inputs.events_grammar_ebnf()}
    assert "response_format" not in body
    assert body["chat_template"] == serving_chat_template()
    assert body["return_token_ids"] is True

    system, user = body["messages"]
    assert system == {
        "role": "system",
        "content": [{"type": "text", "text": "You are a helpful assistant."}],
    }
    video, question = user["content"]
    assert question["type"] == "text" and "420.0 to 426.0 seconds" in question["text"]
    assert video["type"] == "video_url"
    # PNG frames come back bit-exact from the frame list.
    np.testing.assert_array_equal(decode_frames(video["video_url"]["url"], 6), clip.frames)


def test_jpeg_frames_survive_the_frame_list_closely():
    clip = make_clip()
    decoded = decode_frames(frames_data_url(clip.frames, "jpeg", 95), -1)
    assert decoded.shape == clip.frames.shape
    assert np.abs(decoded.astype(int) - clip.frames.astype(int)).mean() < 2.0


def test_served_template_renders_the_offline_prompt_text(tokenizer):
    clip = make_clip()
    vllm_messages = model_inputs.chat_messages(clip.window)  # vLLM turns video_url into this
    served = tokenizer.apply_chat_template(
        vllm_messages,
        chat_template=serving_chat_template(),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert served == model_inputs.processor_prompt_text(tokenizer, clip.window)
    stock = tokenizer.apply_chat_template(
        vllm_messages,
        chat_template=model_inputs.chat_template(),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert "<|vision_start|><|video_pad|><|vision_end|>" in stock


def test_json_schema_mode_and_server_side_template(serve, tokenizer):
    server = serve(like_vllm(tokenizer))
    captioner = OpenAICaptioner(
        server.base_url,
        "m",
        structured_output="json_schema",
        send_chat_template=False,
        verify_prompt=False,
    )
    captioner.describe([make_clip()])
    ((_, _, body),) = server.requests
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "events", "schema": EVENTS_JSON_SCHEMA, "strict": True},
    }
    assert "structured_outputs" not in body
    assert "chat_template" not in body
    assert "return_token_ids" not in body


def test_unconstrained_request_has_no_constraint(serve, tokenizer):
    server = serve(like_vllm(tokenizer))
    OpenAICaptioner(server.base_url, "m", constrained_json=False).describe([make_clip()])
    ((_, _, body),) = server.requests
    assert "structured_outputs" not in body and "response_format" not in body


# --- the answer -----------------------------------------------------------------------


def test_client_parses_the_answer_and_verifies_every_prompt_token(serve, tokenizer):
    server = serve(like_vllm(tokenizer))
    clips = [make_clip(start_second=s) for s in (0, 420, 3000)]
    captioner = OpenAICaptioner(server.base_url, "m", tokenizer=tokenizer)
    answers = captioner.describe_detailed(clips)

    assert len(server.requests) == 3
    for clip, answer in zip(clips, answers, strict=True):
        assert answer.output.text == ANSWER
        assert answer.output.output_tokens == 7
        assert answer.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
        assert answer.output.prompt_tokens == len(answer.prompt_token_ids)
        assert answer.finish_reason == "stop"
    text = tokenizer.decode(answers[1].prompt_token_ids, skip_special_tokens=False)
    assert "<420.5 seconds>" in text and "<0.5 seconds>" not in text
    assert captioner.describe(clips)[2].text == ANSWER


def test_client_rejects_a_server_that_keeps_the_outer_vision_pair(serve, tokenizer):
    # The stock template on the server (no template sent): vLLM keeps the outer pair.
    server = serve(like_vllm(tokenizer))
    captioner = OpenAICaptioner(server.base_url, "m", send_chat_template=False)
    with pytest.raises(PromptLayoutError, match="outer"):
        captioner.describe([make_clip()])


def test_client_rejects_a_server_that_drops_frames(serve, tokenizer):
    server = serve(like_vllm(tokenizer, ignore_num_frames=True))
    with pytest.raises(PromptLayoutError, match="dropped or re-sampled"):
        OpenAICaptioner(server.base_url, "m").describe([make_clip()])


def test_client_rejects_a_server_that_resizes_frames(serve, tokenizer):
    server = serve(like_vllm(tokenizer, resize_to=(32, 64)))
    with pytest.raises(PromptLayoutError, match="resized"):
        OpenAICaptioner(server.base_url, "m").describe([make_clip()])


def test_client_with_tokenizer_rejects_wrong_timestamps(serve, tokenizer):
    def relative_timestamps(body: dict[str, Any]) -> tuple[int, Any]:
        body = json.loads(json.dumps(body))
        body["media_io_kwargs"]["video"].pop("frames_indices")  # server numbers frames 0..T-1
        return 200, vllm_answer(body, server_prompt_ids(tokenizer, body))

    server = serve(relative_timestamps)
    OpenAICaptioner(server.base_url, "m").describe([make_clip()])  # structure alone passes
    with pytest.raises(PromptLayoutError, match="differs"):
        OpenAICaptioner(server.base_url, "m", tokenizer=tokenizer).describe([make_clip()])


def test_answer_without_prompt_ids_is_accepted_unverified(serve, caplog):
    server = serve(lambda body: (200, vllm_answer(body, None)))
    outputs = OpenAICaptioner(server.base_url, "m").describe([make_clip(), make_clip(60)])
    assert [o.text for o in outputs] == [ANSWER, ANSWER]
    assert outputs[0].prompt_tokens == 1234
    assert "cannot be verified" in caplog.text


# --- transport ------------------------------------------------------------------------


def test_client_retries_transient_errors(serve, tokenizer):
    statuses = iter([503, 429])

    def flaky(body: dict[str, Any]) -> tuple[int, Any]:
        status = next(statuses, 200)
        if status != 200:
            return status, {"error": {"message": "busy"}}
        return 200, vllm_answer(body, server_prompt_ids(tokenizer, body))

    server = serve(flaky)
    captioner = OpenAICaptioner(server.base_url, "m", retry_backoff=0.0)
    assert captioner.describe([make_clip()])[0].text == ANSWER
    assert len(server.requests) == 3


def test_client_reports_a_refused_request_without_retrying(serve):
    message = (
        "Chat template is passed with request, but --trust-request-chat-template is not set. "
        "Refused request with untrusted chat template."
    )
    server = serve(lambda body: (400, {"error": {"message": message, "code": 400}}))
    captioner = OpenAICaptioner(server.base_url, "m", retry_backoff=0.0)
    with pytest.raises(OpenAICaptionerError, match="trust-request-chat-template"):
        captioner.describe([make_clip()])
    assert len(server.requests) == 1


def test_unreachable_server_raises_after_retries():
    captioner = OpenAICaptioner(
        "http://127.0.0.1:9", "m", max_retries=1, retry_backoff=0.0, timeout=2.0
    )
    with pytest.raises(OpenAICaptionerError, match="unreachable"):
        captioner.describe([make_clip()])


def test_windows_are_in_flight_together(serve, tokenizer):
    barrier = threading.Barrier(3, timeout=10)

    def wait_for_all(body: dict[str, Any]) -> tuple[int, Any]:
        barrier.wait()  # raises BrokenBarrierError unless 3 requests are open at once
        return 200, vllm_answer(body, server_prompt_ids(tokenizer, body))

    server = serve(wait_for_all)
    clips = [make_clip(start_second=s) for s in (0, 60, 120)]
    outputs = OpenAICaptioner(server.base_url, "m", max_concurrency=4).describe(clips)
    assert len(outputs) == 3
    # Answers come back in window order whatever order the server finished in.
    sent = [body["media_io_kwargs"]["video"]["frames_indices"][0] for _, _, body in server.requests]
    assert sorted(sent) == [0, 1500, 3000]


def test_chat_url_accepts_root_or_v1():
    assert chat_url("http://vllm:8000") == "http://vllm:8000/v1/chat/completions"
    assert chat_url("http://vllm:8000/v1/") == "http://vllm:8000/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_url("vllm:8000")


def test_main_writes_the_serving_template(tmp_path: Path):
    target = tmp_path / "template.jinja"
    assert main(["chat-template", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == serving_chat_template()
    assert main(["nonsense"]) == 2


# --- grounding windows (search refinement) --------------------------------------------


def make_grounding_clip() -> WindowClip:
    clip = make_clip(start_second=95, count=7)
    w = clip.window
    clip.window = Window(w.index, w.start_seconds, w.end_seconds, w.frame_indices, query="a dog")
    return clip


def test_grounding_request_has_the_offline_prompt_tokens_and_a_span_constraint(serve, tokenizer):
    server = serve(like_vllm(tokenizer))
    clip = make_grounding_clip()
    captioner = OpenAICaptioner(server.base_url, "m", tokenizer=tokenizer)
    (answer,) = captioner.describe_detailed([clip])

    ((_, _, body),) = server.requests
    assert body["structured_outputs"] == {"grammar": model_inputs.span_grammar_ebnf()}
    assert body["messages"][1]["content"][1]["text"] == model_inputs.user_prompt(clip.window)
    # Every prompt token checked against the project's layout (verify_prompt + tokenizer).
    assert answer.prompt_token_ids == model_inputs.prompt_token_ids(tokenizer, clip)
    text = tokenizer.decode(answer.prompt_token_ids, skip_special_tokens=False)
    assert "<95.5 seconds><|vision_start|>" in text and '"a dog"' in text

    schema = OpenAICaptioner(server.base_url, "m", structured_output="json_schema")
    assert schema.request_body(clip)["response_format"]["json_schema"] == {
        "name": "span",
        "schema": SPAN_JSON_SCHEMA,
        "strict": True,
    }


# --- several replicas -----------------------------------------------------------------


def test_windows_spread_over_replicas(serve, tokenizer):
    barrier = threading.Barrier(4, timeout=10)

    def answer_together(body: dict[str, Any]) -> tuple[int, Any]:
        barrier.wait()  # four requests open at once, over both replicas
        return 200, vllm_answer(body, server_prompt_ids(tokenizer, body))

    first, second = serve(answer_together), serve(answer_together)
    captioner = OpenAICaptioner(f"{first.base_url},{second.base_url}", "m", max_concurrency=4)
    clips = [make_clip(start_second=s) for s in (0, 60, 120, 180)]
    assert [o.text for o in captioner.describe(clips)] == [ANSWER] * 4
    assert len(first.requests) == len(second.requests) == 2  # fewest open requests first
    assert captioner.urls == [s.base_url + "/chat/completions" for s in (first, second)]


def test_a_failing_replica_is_left_out_and_its_request_retried_elsewhere(serve, tokenizer):
    broken = serve(lambda body: (503, {"error": {"message": "engine dead"}}))
    healthy = serve(like_vllm(tokenizer))
    captioner = OpenAICaptioner(
        [broken.base_url, healthy.base_url],
        "m",
        retry_backoff=60.0,
        replica_cooldown=60.0,
        max_concurrency=1,  # one request at a time: the first goes to the broken replica
    )
    started = time.monotonic()
    outputs = captioner.describe([make_clip(start_second=s) for s in range(0, 300, 60)])
    assert [o.text for o in outputs] == [ANSWER] * 5
    assert time.monotonic() - started < 30  # retried on the other replica, no backoff sleep
    assert len(broken.requests) == 1  # then left out while it cools down
    assert len(healthy.requests) == 5


def test_unreachable_replicas_all_fail_with_the_last_error():
    captioner = OpenAICaptioner(
        ["http://127.0.0.1:9", "http://127.0.0.1:7"],
        "m",
        max_retries=1,
        retry_backoff=0.0,
        timeout=2.0,
    )
    with pytest.raises(OpenAICaptionerError, match="unreachable"):
        captioner.describe([make_clip()])


def test_replicas_refuse_an_empty_or_repeated_list():
    with pytest.raises(ValueError, match="at least one"):
        OpenAICaptioner("", "m")
    with pytest.raises(ValueError, match="repeat"):
        OpenAICaptioner("http://a:1/v1,http://a:1/v1", "m")


# --- priorities -----------------------------------------------------------------------


def test_windows_carry_their_priority_only_when_the_settings_say_so(serve, tokenizer):
    from vidseek.indexer.engine import INGEST_PRIORITY, REFINE_PRIORITY
    from vidseek.server.app import load_captioner
    from vidseek.server.settings import load_settings

    server = serve(like_vllm(tokenizer))
    for send in (False, True):
        overrides = {
            "captioner": "openai",
            "openai_base_url": server.base_url,
            "openai_send_priority": send,
            "model": "m",
        }
        captioner = load_captioner(load_settings(overrides, environ={}))
        try:
            captioner.submit(make_clip(), priority=INGEST_PRIORITY).result(timeout=30)
            captioner.submit(make_grounding_clip(), priority=REFINE_PRIORITY).result(timeout=30)
        finally:
            captioner.close()
    sent = [body.get("priority") for _, _, body in server.requests]
    # vLLM serves a lower number first: refinement (0) ahead of ingestion (1).
    assert sent == [None, None, INGEST_PRIORITY, REFINE_PRIORITY]
    assert REFINE_PRIORITY < INGEST_PRIORITY
