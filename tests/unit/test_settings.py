from __future__ import annotations

import re
from pathlib import Path

import pytest

from vidseek.server.settings import Settings, load_settings
from vidseek.storage.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_and_env_and_overrides():
    s = load_settings(
        environ={
            "VIDSEEK_PORT": "6000",
            "VIDSEEK_SAMPLE_FPS": "2",
            "VIDSEEK_CONSTRAINED_OUTPUT": "false",
            "OTHER": "x",
        },
        overrides={"port": 7000},
    )
    assert s.port == 7000 and s.sample_fps == 2.0 and s.constrained_output is False
    assert s.model == "Qwen/Qwen3-VL-4B-Instruct-FP8"
    assert s.resolved_database_url.startswith("sqlite:///")


def test_unknown_setting_fails_with_its_name():
    with pytest.raises(ConfigError, match="VIDSEEK_SAMPLE_FSP"):
        load_settings(environ={"VIDSEEK_SAMPLE_FSP": "2"})
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(overrides={"bogus": 1}, environ={})


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("VIDSEEK_PORT", "http", "expected int"),
        ("VIDSEEK_PORT", "70000", "0-65535"),
        ("VIDSEEK_CAPTIONER", "openai-magic", "transformers"),
        ("VIDSEEK_SAMPLE_FPS", "0", "> 0"),
        ("VIDSEEK_CONSTRAINED_OUTPUT", "maybe", "expected bool"),
        ("VIDSEEK_INDEX_KIND", "lsh", "flat, hnsw, ivf"),
        ("VIDSEEK_DECODE_NICE", "20", "0-19"),
        ("VIDSEEK_DECODE_BACKEND", "nvdec+ffmpeg", "decode_backend"),
        ("VIDSEEK_DECODE_BACKEND", "pyav+pyav", "each once"),
        ("VIDSEEK_DECODE_BACKEND", "nvdec:0+pyav", "processes of 'nvdec' must be >= 1"),
        ("VIDSEEK_DECODE_BACKEND", "nvdec:\u00b2+pyav", "processes of 'nvdec' must be >= 1"),
        ("VIDSEEK_DECODE_BACKEND", "nvdec+ffmpeg", "unknown video backend 'ffmpeg'"),
        ("VIDSEEK_VLLM_ENGINE_ARGS", "max_num_seqs=4", "vllm_engine_args"),
        ("VIDSEEK_VLLM_ENGINE_ARGS", "[1, 2]", "must be a JSON object"),
        ("VIDSEEK_REFINE_HOLD_SECONDS", "-1", "must be >= 0 and finite"),
        ("VIDSEEK_REFINE_HOLD_SECONDS", "inf", "must be >= 0 and finite"),
    ],
)
def test_bad_values_fail_clearly(name: str, value: str, problem: str):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings(environ={name: value})


def test_every_setting_has_help_and_is_documented_in_readme():
    text = README.read_text()
    for name, help_text in Settings.help().items():
        assert help_text.strip(), f"{name} has no help text"
        assert f"VIDSEEK_{name.upper()}" in text, f"README does not document {name}"


def test_a_decode_pool_may_mix_backends():
    for spec in ("nvdec+pyav", "nvdec:2+pyav"):
        assert load_settings(environ={"VIDSEEK_DECODE_BACKEND": spec}).decode_backend == spec


def test_replace_validates():
    s = load_settings(environ={})
    assert s.replace(port=0).port == 0
    assert s.replace(index_kind="ivf").index_kind == "ivf"
    with pytest.raises(ConfigError):
        s.replace(window_overlap_seconds=1e9)


def test_index_tuning_settings_reach_the_store(tmp_path: Path, embedder):
    from vidseek.server.app import build_app, rebuild_index
    from vidseek.storage.vector_index import HnswParams, IvfParams

    settings = load_settings(
        environ={
            "VIDSEEK_DATA_DIR": str(tmp_path),
            "VIDSEEK_INDEX_KIND": "ivf",
            "VIDSEEK_IVF_NLIST": "8",
            "VIDSEEK_IVF_NPROBE": "3",
            "VIDSEEK_HNSW_EF_SEARCH": "64",
        }
    )
    app = build_app(settings, embedder=embedder)
    try:
        assert app.store.ivf == IvfParams(nlist=8, nprobe=3)
        assert app.store.hnsw == HnswParams(ef_search=64)
    finally:
        app.shutdown()
    with pytest.raises(ConfigError, match="ivf_nprobe"):
        load_settings(environ={"VIDSEEK_IVF_NLIST": "8", "VIDSEEK_IVF_NPROBE": "9"})
    with pytest.raises(ConfigError, match="no events"):
        rebuild_index(settings)  # an empty database: nothing to take the dimension from


def test_library_warnings_come_out_once_through_the_root_handler(capsys):
    import logging

    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    from vidseek.server.logs import route_library_logs

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.name)

    root = logging.getLogger()
    handler = Collect()
    root.addHandler(handler)
    try:
        hub_logging.get_logger()  # each library installs its own stderr handler
        transformers_logging.get_logger()
        route_library_logs()
        hub_logging.get_logger("huggingface_hub.file_download").warning("hub says")
        transformers_logging.get_logger("transformers.modeling").warning("transformers says")
    finally:
        root.removeHandler(handler)
    assert seen == ["huggingface_hub.file_download", "transformers.modeling"]
    err = capsys.readouterr().err
    assert "hub says" not in err and "transformers says" not in err  # no second copy


def test_the_task_queue_needs_postgresql(tmp_path: Path):
    with pytest.raises(ConfigError, match="'procrastinate' needs a PostgreSQL database_url"):
        load_settings(environ={"VIDSEEK_JOB_QUEUE": "procrastinate"})
    with pytest.raises(ConfigError, match="worker_stalled_seconds"):
        load_settings(
            environ={
                "VIDSEEK_WORKER_HEARTBEAT_SECONDS": "10",
                "VIDSEEK_WORKER_STALLED_SECONDS": "15",
            }
        )
    from vidseek.server.worker import worker_main

    # A worker on the embedded SQLite default says what it needs before loading anything.
    sqlite = load_settings(environ={"VIDSEEK_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="the task queue needs PostgreSQL, not sqlite"):
        worker_main(sqlite)


def test_the_refinement_hold_reaches_the_engine_that_jobs_and_refinement_share(
    tmp_path: Path, embedder
):
    from tests.support.engines import HeldEngine
    from vidseek.server.app import build_app

    environ = {"VIDSEEK_DATA_DIR": str(tmp_path), "VIDSEEK_REFINE_HOLD_SECONDS": "1.5"}
    app = build_app(load_settings(environ=environ), embedder=embedder, captioner_factory=HeldEngine)
    try:
        engine = app.jobs.captioner()
        assert engine.refine_hold == 1.5 and engine is app.jobs.captioner()
    finally:
        app.shutdown()


def test_vllm_engine_args_reach_the_engine(monkeypatch: pytest.MonkeyPatch):
    from vidseek.indexer import engine_vllm
    from vidseek.server.app import load_captioner

    built: list[dict] = []

    class Recorder:
        def __init__(self, model: str, **kwargs) -> None:
            built.append(kwargs)

    monkeypatch.setattr(engine_vllm, "AsyncVllmEngine", Recorder)
    environ = {
        "VIDSEEK_CAPTIONER": "vllm",
        "VIDSEEK_VLLM_ENGINE_ARGS": '{"max_num_batched_tokens": 32768, "max_num_seqs": 256}',
    }
    load_captioner(load_settings(environ=environ))
    load_captioner(load_settings(environ={"VIDSEEK_CAPTIONER": "vllm"}))
    assert [b["engine_options"] for b in built] == [
        {"max_num_batched_tokens": 32768, "max_num_seqs": 256},
        {},
    ]
    # The engine warms up with a refinement of a 16:9 source at the refinement pixels.
    assert built[1]["grounding_warm_up"] == (352, 640)
    environ = {"VIDSEEK_CAPTIONER": "vllm", "VIDSEEK_REFINE_MAX_PIXELS": str(448 * 256)}
    load_captioner(load_settings(environ=environ))
    assert built[2]["grounding_warm_up"] == (256, 448)
    # No refinement, no warm-up for it.
    load_captioner(load_settings(environ={**environ, "VIDSEEK_REFINE_MAX_MOMENTS": "0"}))
    assert built[3]["grounding_warm_up"] is None
