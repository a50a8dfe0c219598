"""The engine benchmark's production-engine path (``caption_throughput.py --engine async``)
up to vLLM: a stand-in ``AsyncLLM`` that answers at once and counts renders."""

from __future__ import annotations

import argparse
import asyncio
import time
import types
from pathlib import Path
from typing import Any

import pytest

from benchmarks.caption_throughput import _time_async as _time_async_runs
from benchmarks.caption_throughput import synthetic_clips
from tests.support.fake_vllm import install_fake_vllm
from vidseek.indexer import engine_vllm


def _time_async(model_dir: Path, options: dict[str, Any], clips: Any, args: Any):
    """The benchmark's async timing: the engine's build time and every run, in order."""
    runs: list[Any] = []
    built: list[float] = []

    def ended(build_seconds: float, run: Any) -> None:
        built.append(build_seconds)
        runs.append(run)

    _time_async_runs(model_dir, options, clips, args, ended)
    return built[0], runs


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoProcessor

    from tests.support.tiny_qwen import build_tiny_qwen3_vl

    directory = build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    return AutoProcessor.from_pretrained(directory).tokenizer


class AnsweringLLM:
    def __init__(self, kwargs: dict[str, Any], tokenizer: Any) -> None:
        self.kwargs = kwargs
        self.tokenizer = tokenizer
        self.renders = 0
        self.requests: list[dict[str, Any]] = []
        self.renderer = types.SimpleNamespace(render_cmpl_async=self._render)

    async def _render(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.renders += len(prompts)
        await asyncio.sleep(0)
        return [{"rendered": p} for p in prompts]

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    async def generate(self, prompt: dict[str, Any], params: Any, request_id: str, *, priority):
        self.requests.append(prompt)
        yield types.SimpleNamespace(
            prompt_token_ids=[1, 2, 3],
            outputs=[types.SimpleNamespace(text="x", token_ids=[7] * params.kwargs["max_tokens"])],
        )

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("prerender", [False, True])
def test_every_window_is_rendered_once_and_answered(
    monkeypatch, tmp_path: Path, tokenizer, prerender
):
    install_fake_vllm(monkeypatch)
    made: list[AnsweringLLM] = []

    def factory(kwargs: dict[str, Any]) -> AnsweringLLM:
        made.append(AnsweringLLM(kwargs, tokenizer))
        return made[-1]

    monkeypatch.setattr(engine_vllm, "_default_llm_factory", factory)
    clips = synthetic_clips(5, 4.0, 1.0, 32, 64, 30.0)
    args = argparse.Namespace(
        output_tokens=16,
        constrained=False,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        renderer_workers=3,
        enforce_eager=False,
        warmup=2,
        prerender=prerender,
        in_flight=0,
        passes=1,
        refine_interval=0.0,
        refine_seconds=16.0,
        refine_hold=[0.0],
        profile_steps=0,
        refine_unconstrained=False,
        output_tokens_spread=0.0,
    )
    _, [(elapsed, outputs, measured)] = _time_async(tmp_path, {"load_format": "dummy"}, clips, args)
    (llm,) = made
    assert llm.kwargs["renderer_num_workers"] == 3 and llm.kwargs["load_format"] == "dummy"
    assert [o.output_tokens for o in outputs] == [16] * 5  # forced to --output-tokens
    assert llm.renders == 1 + 2 + 5  # the engine's warm-up, the warm-up windows, the pass
    assert len(llm.requests) == 2 + 5
    assert measured["prerender"] is prerender and ("render_s" in measured) is prerender
    assert measured["in_flight"] == 5 and "refine_probes" not in measured
    assert elapsed > 0


class SlowLLM(AnsweringLLM):
    """Answers after ``delay`` seconds, counting requests in flight and priorities."""

    def __init__(
        self, kwargs: dict[str, Any], tokenizer: Any, delay: float, probe_delay: float = 0.0
    ) -> None:
        super().__init__(kwargs, tokenizer)
        self.delay = delay
        self.probe_delay = probe_delay or delay  # a refinement's, if different
        self.in_flight = 0
        self.most_in_flight = 0
        self.priorities: list[int] = []
        self.params: list[dict[str, Any]] = []
        self.starts: list[tuple[float, int]] = []  # (when, priority) of each request
        self.probes: list[tuple[float, float]] = []  # (start, end) of each refinement

    async def generate(self, prompt: dict[str, Any], params: Any, request_id: str, *, priority):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.priorities.append(priority)
        self.params.append(params.kwargs)
        self.starts.append((time.monotonic(), priority))
        delay = self.probe_delay if priority == 0 else self.delay
        try:
            queued = time.monotonic()
            await asyncio.sleep(delay)
            async for out in super().generate(prompt, params, request_id, priority=priority):
                # The engine core's timestamps, as vLLM gives them with its stats on.
                out.metrics = types.SimpleNamespace(
                    queued_ts=queued,
                    scheduled_ts=queued + delay / 4,
                    first_token_ts=queued + delay / 2,
                    last_token_ts=time.monotonic(),
                )
                if priority == 0:
                    self.probes.append((queued, time.monotonic()))
                yield out
        finally:
            self.in_flight -= 1


def _streaming_args(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        output_tokens=16,
        constrained=False,
        gpu_memory_utilization=0.5,
        max_model_len=16384,
        renderer_workers=2,
        enforce_eager=False,
        warmup=0,
        prerender=True,
        in_flight=3,
        passes=2,
        refine_interval=0.0,
        refine_seconds=4.0,
        refine_hold=[0.0],
        profile_steps=0,
        profile_dir="",
        refine_unconstrained=False,
        output_tokens_spread=0.0,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def _slow_engine(monkeypatch, tokenizer, delay: float, probe_delay: float = 0.0) -> list[SlowLLM]:
    install_fake_vllm(monkeypatch)
    made: list[SlowLLM] = []

    def factory(kwargs: dict[str, Any]) -> SlowLLM:
        made.append(SlowLLM(kwargs, tokenizer, delay, probe_delay))
        return made[-1]

    monkeypatch.setattr(engine_vllm, "_default_llm_factory", factory)
    return made


def test_in_flight_keeps_that_many_windows_in_the_engine_over_the_passes(
    monkeypatch, tmp_path: Path, tokenizer
):
    made = _slow_engine(monkeypatch, tokenizer, delay=0.02)
    clips = synthetic_clips(5, 4.0, 1.0, 32, 64, 30.0)
    _, [(_, outputs, measured)] = _time_async(tmp_path, {}, clips, _streaming_args())
    (llm,) = made
    assert len(outputs) == 10 and len(llm.requests) == 10  # 5 windows, 2 passes
    assert llm.renders == 1 + 5  # the warm-up render, then each window once
    assert llm.most_in_flight == 3  # never more than --in-flight, and filled to it
    # The second pass sends the same rendered windows again.
    assert all(a is b for a, b in zip(llm.requests[:5], llm.requests[5:], strict=True))
    assert measured["in_flight"] == 3 and measured["passes"] == 2
    assert measured["steady_windows_per_s"] > 0 and measured["steady_s"] > 0


def test_refinement_probes_go_ahead_of_the_windows_and_are_timed(
    monkeypatch, tmp_path: Path, tokenizer
):
    made = _slow_engine(monkeypatch, tokenizer, delay=0.05)
    clips = synthetic_clips(8, 4.0, 1.0, 32, 64, 30.0)
    args = _streaming_args(in_flight=2, passes=3, refine_interval=0.1, output_tokens=256)
    _, [(elapsed, outputs, measured)] = _time_async(tmp_path, {}, clips, args)
    (llm,) = made
    probes = measured["refine_probes"]
    assert len(outputs) == 24 and probes >= 2
    assert {o.output_tokens for o in outputs} == {256}
    # First the engine's warm-up: a 2-frame refinement of the probes' frame size.
    warm_up = llm.requests[0]["rendered"]["multi_modal_data"]["video"][0][0]
    assert warm_up.shape == (2, 352, 640, 3) and llm.priorities[0] == 0
    assert len(llm.requests) == 1 + 24 + probes
    assert sorted(llm.priorities) == [0] * (1 + probes) + [1] * 24
    # Probes decode as refinement does (under the span grammar), windows as forced.
    for params, priority in zip(llm.params, llm.priorities, strict=True):
        grammar = params.get("structured_outputs")
        if priority == 0:
            assert grammar is not None and "start" in grammar.kwargs["grammar"]
        else:
            assert grammar is None and params["ignore_eos"] and params["max_tokens"] == 256
    assert 0.05 <= measured["refine_p50_s"] <= measured["refine_max_s"] < elapsed
    assert measured["refine_frames"] == 8  # 4 s at 2 fps
    assert len(measured["refine_latencies_s"]) == probes
    # vLLM keeps its stats while probing: each answer's time splits into its parts.
    assert llm.kwargs["disable_log_stats"] is False
    for name in ("refine", "window"):
        assert 0 < measured[f"{name}_prefill_p50_s"] < measured[f"{name}_decode_p50_s"]
        assert measured[f"{name}_step_p50_ms"] > 0 and measured[f"{name}_render_p50_s"] >= 0
        assert measured[f"{name}_transit_p50_s"] >= 0
    assert len(measured["refine_parts_s"]) == probes
    assert all(p["decode"] > p["prefill"] > 0 for p in measured["refine_parts_s"])
    assert measured["refine_holds"] == 0  # --refine-hold 0: off


def test_refinement_probes_can_decode_without_their_grammar(monkeypatch, tmp_path, tokenizer):
    made = _slow_engine(monkeypatch, tokenizer, delay=0.02)
    clips = synthetic_clips(8, 4.0, 1.0, 32, 64, 30.0)
    args = _streaming_args(refine_interval=0.05, output_tokens=256, refine_unconstrained=True)
    _, [(_, _, measured)] = _time_async(tmp_path, {}, clips, args)
    (llm,) = made
    assert measured["refine_probes"] >= 1
    for params, priority in zip(llm.params, llm.priorities, strict=True):
        if priority == 0:  # the probes (and the warm-up): no grammar, the grammar's bound
            assert "structured_outputs" not in params and params["max_tokens"] == 40
        else:
            assert params["ignore_eos"] and params["max_tokens"] == 256


def test_output_tokens_spread_gives_windows_answers_of_different_fixed_lengths(
    monkeypatch, tmp_path, tokenizer
):
    made = _slow_engine(monkeypatch, tokenizer, delay=0.0)
    clips = synthetic_clips(40, 4.0, 1.0, 32, 64, 30.0)
    args = _streaming_args(in_flight=8, output_tokens=100, output_tokens_spread=0.5)
    _, [(_, outputs, _)] = _time_async(tmp_path, {}, clips, args)
    (llm,) = made
    lengths = [o.output_tokens for o in outputs]
    assert all(50 <= n <= 150 for n in lengths) and len(set(lengths)) > 10
    assert 85 <= sum(lengths) / len(lengths) <= 115  # about --output-tokens on average
    assert lengths[:40] == lengths[40:]  # a window's length is the same each pass
    assert all(p["ignore_eos"] for p in llm.params)


def test_refine_hold_holds_the_windows_back_while_a_probe_runs(
    monkeypatch, tmp_path: Path, tokenizer
):
    # Probes take 10 windows' time: without the hold, windows keep coming in meanwhile.
    made = _slow_engine(monkeypatch, tokenizer, delay=0.02, probe_delay=0.2)
    clips = synthetic_clips(8, 4.0, 1.0, 32, 64, 30.0)
    # Probes further apart than a hold lasts: each starts one (no cooldown left).
    args = _streaming_args(in_flight=4, passes=24, refine_interval=0.3, refine_hold=[5.0, 0.0])
    _, runs = _time_async(tmp_path, {}, clips, args)  # two timed runs on one engine
    (llm,) = made
    joined = {}
    starts, probes = llm.starts[1:], llm.probes[1:]  # after the engine's warm-up
    for _, outputs, measured in runs:
        hold, count = measured["refine_hold_s"], measured["refine_probes"]
        assert len(outputs) == 192 and count >= 1
        assert (measured["refine_holds"] >= 1) is (hold > 0)
        # Windows that came into the engine while a probe was in it, per probe (one
        # already on its way when the hold began may arrive just after).
        mine, starts = starts[: 192 + count], starts[192 + count :]
        spans, probes = probes[:count], probes[count:]
        joined[hold] = (
            sum(
                any(start + 0.01 < when < end for start, end in spans)
                for when, priority in mine
                if priority == 1
            )
            / count
        )
    assert [m["refine_hold_s"] for _, _, m in runs] == [5.0, 0.0]
    assert joined[5.0] <= 1 and joined[0.0] >= 3


def test_the_engine_is_sized_for_a_refinement_clip_larger_than_a_window(
    monkeypatch, tmp_path: Path, tokenizer
):
    made = _slow_engine(monkeypatch, tokenizer, delay=0.0)
    clips = synthetic_clips(2, 4.0, 1.0, 32, 64, 30.0)
    args = _streaming_args(
        passes=1, refine_interval=100.0, refine_seconds=80.0, max_model_len=32768
    )
    _, [(_, _, measured)] = _time_async(tmp_path, {}, clips, args)
    (llm,) = made
    # 160 frames of 640x352: 80 pairs of 220 tokens, past the 16,384-token default step.
    assert llm.kwargs["max_num_batched_tokens"] == 80 * 220
    assert measured["refine_probes"] == 0 and measured["refine_p50_s"] is None


class ProfiledLLM(SlowLLM):
    """Also records, at each start and stop of the profiler, how many answers were out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = 0
        self.profiler: list[tuple[str, int]] = []

    async def generate(self, prompt: dict[str, Any], params: Any, request_id: str, *, priority):
        async for out in super().generate(prompt, params, request_id, priority=priority):
            self.answered += 1
            yield out

    async def start_profile(self) -> None:
        self.profiler.append(("start", self.answered))

    async def stop_profile(self) -> None:
        self.profiler.append(("stop", self.answered))


def test_profile_steps_profile_a_pass_after_the_timed_runs_past_its_first_wave(
    monkeypatch, tmp_path: Path, tokenizer
):
    install_fake_vllm(monkeypatch)
    made: list[ProfiledLLM] = []

    def factory(kwargs: dict[str, Any]) -> ProfiledLLM:
        made.append(ProfiledLLM(kwargs, tokenizer, 0.01))
        return made[-1]

    monkeypatch.setattr(engine_vllm, "_default_llm_factory", factory)
    clips = synthetic_clips(10, 4.0, 1.0, 32, 64, 30.0)
    args = _streaming_args(profile_steps=40, profile_dir=str(tmp_path / "prof"))
    _, runs = _time_async(tmp_path, {}, clips, args)
    (llm,) = made
    assert len(runs) == 1  # the profiled pass is not a timed run
    config = llm.kwargs["profiler_config"].kwargs
    assert config["profiler"] == "torch" and config["max_iterations"] == 40
    assert config["torch_profiler_dir"] == str((tmp_path / "prof").resolve())
    assert config["torch_profiler_with_stack"] is False
    # 20 timed answers, then the profiled pass's: started 30% in, stopped at its end.
    (start, at), (stop, end) = llm.profiler
    assert (start, stop) == ("start", "stop")
    assert 20 + 6 <= at < 20 + 20 and end == 40


def test_refinement_latency_in_the_steady_part_counts_probes_sent_in_it():
    from benchmarks.engine_load import RefineProber

    prober = RefineProber(None, argparse.Namespace(refine_interval=1.0, refine_seconds=4.0))
    # Windows answered at t = 1..100: the steady part runs from answer 10 to answer 90.
    answered_at = [float(t) for t in range(1, 101)]
    prober.sent_at = [2.0, 20.0, 50.0, 89.0, 95.0]
    prober.latencies = [30.0, 1.0, 2.0, 3.0, 40.0]
    prober.outputs = [types.SimpleNamespace(engine_seconds=None, output_tokens=10)] * 5
    report = prober.report(answered_at)
    assert report["refine_probes"] == 5 and report["refine_steady_probes"] == 3
    assert report["refine_steady_p50_s"] == 2.0 and report["refine_steady_p99_s"] == 3.0
    assert report["refine_p99_s"] == 40.0
    assert prober.report([1.0])["refine_steady_probes"] == 0  # no steady part


def test_refinement_clip_is_the_servers_default_shape():
    from benchmarks.engine_load import refine_clip

    clip = refine_clip(16.0, 3)
    assert clip.frames.shape == (32, 352, 640, 3)
    assert clip.window.query and clip.window.end_seconds - clip.window.start_seconds == 16.0
    assert clip.window.frame_indices[1] - clip.window.frame_indices[0] == 15  # 2 fps of 30


def test_steady_rate_leaves_out_the_first_and_last_tenth():
    from benchmarks.engine_load import steady_rate

    class NoGpu:
        def busy_between(self, start: float, end: float) -> None:
            return None

    # 10 answers a second in the middle, slow at both ends.
    times = [0.0, 5.0] + [5.0 + 0.1 * k for k in range(1, 97)] + [30.0, 40.0]
    rate = steady_rate(times, 60.0, NoGpu())
    assert rate["steady_windows_per_s"] == pytest.approx(10.0, rel=0.02)
    assert rate["steady_video_hours_per_gpu_hour"] == pytest.approx(600.0, rel=0.02)
    assert steady_rate(times[:5], 60.0, NoGpu()) == {}


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--in-flight", "8"], "need --engine async"),
        (["--refine-hold", "2"], "need --engine async"),
        (["--engine", "async", "--refine-hold", "nan"], "must be >= 0"),
        (["--engine", "async", "--passes", "2", "--windows", "10"], "encoder cache"),
        (["--engine", "async", "--refine-hold", "-1"], "must be >= 0"),
        (["--engine", "async", "--passes", "0"], "--passes >= 1"),
        (["--profile-steps", "5"], "need --engine async"),
        (["--engine", "async", "--profile-steps", "-1"], "--profile-steps must be >= 0"),
        (["--engine", "async", "--output-tokens-spread", "1"], "must be in [0, 1)"),
        (["--output-tokens-spread", "0.5"], "needs --engine async and forced answers"),
        (
            ["--engine", "async", "--refine-unconstrained", "--constrained"],
            "cannot be combined with --constrained",
        ),
    ],
)
def test_streaming_options_are_checked(capsys, argv, problem):
    from benchmarks.caption_throughput import main

    with pytest.raises(SystemExit):
        main(argv)
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "problem"), [("[1]", "must be a JSON object"), ("{kv", "not JSON")]
)
def test_engine_arguments_that_are_not_a_json_object_are_refused(capsys, text, problem):
    from benchmarks.caption_throughput import main

    with pytest.raises(SystemExit):
        main(["--engine-args", text])
    assert problem in capsys.readouterr().err


def test_both_benchmarks_build_engine_arguments_alike_with_engine_args_last():
    from benchmarks.caption_throughput import dummy_engine_options
    from benchmarks.ingest_engines import engine_options

    args = argparse.Namespace(
        max_num_batched_tokens=32768,
        max_num_seqs=0,
        engine_args={"enable_prefix_caching": True, "kv_cache_dtype": "fp8"},
    )
    common = {"load_format": "dummy", "dtype": "bfloat16", "max_num_batched_tokens": 32768}
    assert dummy_engine_options(args) == {**common, **args.engine_args}
    assert engine_options(args) == {**common, **args.engine_args}  # overrides the cache's off
    args.engine_args = {}
    assert engine_options(args) == {**common, "enable_prefix_caching": False}


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--output-tokens-spread", "1"], "must be in [0, 1)"),
        (["--engine", "tiny", "--output-tokens-spread", "0.5"], "needs --engine vllm or serve"),
        (["--decode-lookahead", "2", "-1"], "--decode-lookahead must be >= 0, got -1"),
    ],
)
def test_the_ingest_benchmark_checks_its_arguments(capsys, argv, problem):
    from benchmarks.ingest_throughput import main

    with pytest.raises(SystemExit):
        main(argv)
    assert problem in capsys.readouterr().err
