"""The Prometheus endpoint: scraped during a real ingest and search, its figures move."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner, GatedCaptioner
from vidseek.client import Client, NotFoundError
from vidseek.server.app import create_server
from vidseek.server.settings import load_settings
from vidseek.storage.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in body.splitlines():
        match = re.fullmatch(r"(vidseek_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def test_metrics_move_with_an_ingest_and_searches(data_dir: Path, embedder, colour_video: Path):
    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "window_seconds": 2.0,
            "metrics_port": _free_port(),
        },
        environ={},
    )
    captioner = GatedCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    try:
        before = _scrape(app.metrics_port)
        assert before['vidseek_ingest_jobs{state="queued"}'] == 0
        assert before["vidseek_index_events"] == 0
        with Client(f"127.0.0.1:{port}", retries=0) as client:
            job = client.ingest(str(colour_video))
            assert captioner.waiting.wait(60)
            during = _scrape(app.metrics_port)
            assert during['vidseek_ingest_jobs{state="running"}'] == 1
            assert during["vidseek_engine_windows_in_flight"] >= 1
            captioner.gate.set()
            done = client.wait_for_job(job.job_id, timeout=60)
            assert client.search("a red screen", min_score=-1.0)
            with pytest.raises(NotFoundError):
                client.get_video("no-such-video")
        after = _scrape(app.metrics_port)
        duration = app.store.get_video(done.video_id).duration
        events = app.store.index.ntotal
    finally:
        captioner.gate.set()
        server.stop(0)
        app.shutdown()

    windows = done.windows_total
    assert after['vidseek_ingest_windows_total{status="parsed"}'] == windows
    assert after["vidseek_ingest_video_seconds_total"] == pytest.approx(duration, abs=0.5)
    assert after['vidseek_engine_windows_total{outcome="completed"}'] == windows
    assert after['vidseek_ingest_stage_seconds_total{stage="decode"}'] > 0
    backend = settings.decode_backend
    assert after[f'vidseek_ingest_windows_decoded_total{{backend="{backend}"}}'] == windows
    assert after[f'vidseek_ingest_decode_seconds_total{{backend="{backend}"}}'] == pytest.approx(
        after['vidseek_ingest_stage_seconds_total{stage="decode"}'], abs=1e-3
    )
    assert after['vidseek_ingest_stage_seconds_total{stage="commit"}'] > 0
    assert after["vidseek_index_events"] == events > 0
    assert after["vidseek_index_change_log_lag"] == 0
    assert after['vidseek_rpc_requests_total{code="OK",method="Search"}'] == 1
    assert after['vidseek_rpc_requests_total{code="NOT_FOUND",method="GetVideo"}'] == 1
    assert after['vidseek_rpc_requests_total{code="OK",method="IngestVideo"}'] == 1
    assert after['vidseek_rpc_duration_seconds_count{method="Search"}'] == 1


def test_metrics_are_off_by_default_and_a_taken_port_is_a_clear_error(
    data_dir: Path, embedder, tmp_path: Path
):
    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, _, app = create_server(settings, embedder=embedder, captioner_factory=ColourCaptioner)
    try:
        assert app.metrics is None and app.metrics_port == 0
    finally:
        server.stop(0)
        app.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = load_settings(
            overrides={
                "port": 0,
                "data_dir": str(tmp_path / "other"),
                "metrics_port": taken.getsockname()[1],
            },
            environ={},
        )
        with pytest.raises(ConfigError, match=r"cannot serve metrics on 127\.0\.0\.1"):
            create_server(busy, embedder=embedder, captioner_factory=ColourCaptioner)


def test_the_cli_follows_its_jobs_by_streaming_not_polling(
    data_dir: Path, embedder, tmp_path: Path, capsys: pytest.CaptureFixture
):
    from tests.support.videos import write_video
    from vidseek.server.cli import main

    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "window_seconds": 2.0,
            "metrics_port": _free_port(),
        },
        environ={},
    )
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=ColourCaptioner
    )
    videos = [
        write_video(tmp_path / f"v{i}.mp4", seconds=4, colors=[(255, 0, 0)] * i + [(0, 0, 255)])
        for i in (1, 2)
    ]
    try:
        target = f"127.0.0.1:{port}"
        code = main(["ingest", *videos, "--workers", "2", "--json", "--server", target])
        deadline = time.monotonic() + 10  # a stream is counted when its server side ends
        while True:
            scraped = _scrape(app.metrics_port)
            watches = sum(
                v
                for k, v in scraped.items()
                if k.startswith("vidseek_rpc_requests_total{") and 'method="WatchIngestJob"' in k
            )
            if watches >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        server.stop(0)
        app.shutdown()
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["failed"] == 0
    assert [r["status"] for r in out["results"].values()] == ["indexed", "indexed"]
    # One stream per job, counted once each (OK, or CANCELLED when the client hung up
    # after the final message and before the server side ended).
    assert watches == 2
    codes = {k for k in scraped if k.startswith("vidseek_rpc_requests_total{") and "Watch" in k}
    assert codes <= {
        'vidseek_rpc_requests_total{code="OK",method="WatchIngestJob"}',
        'vidseek_rpc_requests_total{code="CANCELLED",method="WatchIngestJob"}',
    }
    assert not [k for k in scraped if 'method="GetIngestJob"' in k]
