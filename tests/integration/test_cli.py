"""The `vidseek` command against a real server: exit codes and output scripts can trust."""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner, GatedCaptioner
from tests.support.search_corpus import index_videos, name_of
from tests.support.videos import write_video
from vidseek.server import cli
from vidseek.server.app import create_server
from vidseek.server.cli import main, parse_seconds
from vidseek.server.settings import load_settings


def test_ingest_search_and_listing_through_the_cli(
    data_dir: Path, embedder, colour_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "window_seconds": 6.0}, environ={}
    )
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=ColourCaptioner
    )
    addr = ["--server", f"127.0.0.1:{port}"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    try:
        code = main(
            ["ingest", str(colour_video), str(bad), str(tmp_path / "gone.mp4"), "--json", *addr]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 1  # something failed
        assert out["failed"] == 2
        assert out["results"][str(colour_video)]["status"] == "indexed"
        assert out["results"][str(colour_video)]["windows"] == 2
        assert "not found" in out["results"][str(tmp_path / "gone.mp4")]["error"]
        assert str(bad) in out["results"][str(bad)]["error"]

        assert main(["ingest", str(colour_video), "--collection", "palette", *addr]) == 0
        out = capsys.readouterr().out
        assert "already indexed (same content)" in out and "1 skipped" in out

        assert main(["search", "a green screen", "--json", *addr]) == 0
        moments = json.loads(capsys.readouterr().out)["moments"]
        assert moments[0]["description"] == "a green screen"
        assert 2.0 <= moments[0]["start_seconds"] < moments[0]["end_seconds"] <= 4.0

        assert main(["search", "", *addr]) == 1
        assert "INVALID_ARGUMENT" in capsys.readouterr().err

        assert main(["videos", "--json", *addr]) == 0
        (video,) = json.loads(capsys.readouterr().out)
        assert video["collection"] == "palette"  # the second ingest named it
        assert main(["videos", *addr]) == 0
        header, row = capsys.readouterr().out.splitlines()
        assert "collection" in header.split() and "palette" in row.split()
        assert main(["jobs", *addr]) == 0
        assert "succeeded" in capsys.readouterr().out
        # Not under a running server: it would write the snapshot the server owns.
        assert main(["index", "rebuild", "--data-dir", str(data_dir)]) == 2
        err = capsys.readouterr().err
        assert f"in use by vidseek server (pid {os.getpid()})" in err
        assert "stop it before the index rebuild" in err
    finally:
        server.stop(0)
        app.shutdown()

    # Offline maintenance commands on the same data directory.
    assert main(["index", "rebuild", "--data-dir", str(data_dir)]) == 0
    assert "vectors" in capsys.readouterr().out
    assert main(["db", "upgrade", "--data-dir", str(data_dir)]) == 0
    assert "schema" in capsys.readouterr().out


def test_unreachable_server_and_bad_settings_exit_codes(capsys: pytest.CaptureFixture):
    assert main(["search", "x", "--server", "127.0.0.1:1", "--connect-timeout", "0.5"]) == 3
    assert "unavailable" in capsys.readouterr().err
    assert main(["index", "rebuild", "--ivf-nlist", "notanumber"]) == 2
    assert "ivf_nlist" in capsys.readouterr().err


@pytest.fixture
def corpus_server(data_dir: Path, embedder) -> Iterator[tuple[list[str], dict[str, str]]]:
    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, port, app = create_server(settings, embedder=embedder)
    ids = index_videos(app.store, embedder)
    yield ["--server", f"127.0.0.1:{port}"], ids
    server.stop(0)
    app.shutdown()


def test_search_options_through_the_cli(corpus_server, capsys: pytest.CaptureFixture):
    addr, ids = corpus_server
    search = ["search", "people doing things", "--min-score", "-1", *addr]

    assert main([*search, "--collection", "music", "-k", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {name_of(ids, m["video_id"]) for m in out["moments"]} == {"guitar", "concert"}
    assert (out["videos"], out["next_page_token"]) == ([], "")

    assert main([*search, "--video", ids["kitchen"], "--from", "0:21", "--to", "35", "--json"]) == 0
    moments = json.loads(capsys.readouterr().out)["moments"]
    assert moments and all(m["end_seconds"] >= 21 and m["start_seconds"] <= 35 for m in moments)

    assert main([*search, "--group-by-video", "--per-video", "1", "-k", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["videos"]) == 2 and all(len(v["moments"]) == 1 for v in first["videos"])
    token = first["next_page_token"]
    assert token
    assert (
        main(
            [
                *search,
                "--group-by-video",
                "--per-video",
                "1",
                "-k",
                "2",
                "--page-token",
                token,
                "--json",
            ]
        )
        == 0
    )
    second = json.loads(capsys.readouterr().out)
    assert {v["video_id"] for v in second["videos"]}.isdisjoint(
        v["video_id"] for v in first["videos"]
    )

    # Text output: one line per video with its moments indented, then the next page.
    assert main([*search, "--group-by-video", "-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("next page: --page-token ")
    assert lines[1].startswith("        ")

    # --refine without a refiner on the server: coarse moments, no error.
    assert main([*search, "-k", "1", "--refine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["moments"][0]["refined"] is False

    assert main([*search, "--from", "30", "--to", "10"]) == 1
    assert "inverted time range" in capsys.readouterr().err
    assert main([*search, "--page-token", "bogus"]) == 1
    assert "invalid page_token" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90.5", 90.5), ("1:30", 90.0), ("1:02:03", 3723.0), ("0:00:01.5", 1.5)],
)
def test_times_accept_seconds_and_clock_notation(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "1:", "1:75", "a:10", "1:2:3:4", "-3"])
def test_bad_times_are_usage_errors(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        parse_seconds(text)


def _colour_videos(tmp_path: Path, n: int) -> list[str]:
    return [
        write_video(tmp_path / f"v{i}.mp4", seconds=4, colors=[(255, 0, 0)] * i + [(0, 0, 255)])
        for i in range(1, n + 1)
    ]


def test_ingest_keeps_workers_jobs_in_flight_and_reports_each_video(
    data_dir: Path, embedder, tmp_path: Path, capsys: pytest.CaptureFixture
):
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "window_seconds": 2.0}, environ={}
    )
    captioner = ColourCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    videos = _colour_videos(tmp_path, 3)
    try:
        code = main(["ingest", *videos, "--workers", "1", "--server", f"127.0.0.1:{port}"])
        lines = capsys.readouterr().out.splitlines()
        assert code == 0
        assert [line.split()[:2] for line in lines[:3]] == [["indexed", v] for v in videos]
        assert "2 windows (0 unparsed, 0 skipped)" in lines[0]
        assert lines[-1] == "3 indexed"
        assert main(["ingest", *videos, "--workers", "0", "--server", f"127.0.0.1:{port}"]) == 2
        capsys.readouterr()

        # Cancelling ended or unknown jobs is refused, naming why.
        assert main(["jobs", "--json", "--server", f"127.0.0.1:{port}"]) == 0
        done = json.loads(capsys.readouterr().out)[0]["job_id"]
        code = main(["cancel", done, "nope", "--json", "--server", f"127.0.0.1:{port}"])
        refused = json.loads(capsys.readouterr().out)
        assert code == 1
        assert "already succeeded" in refused[0]["error"] and "not found" in refused[1]["error"]
    finally:
        server.stop(0)
        app.shutdown()


def test_ctrl_c_cancels_the_jobs_in_flight_after_their_current_window(
    data_dir: Path, embedder, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
):
    settings = load_settings(
        overrides={
            "port": 0,
            "data_dir": str(data_dir),
            "window_seconds": 2.0,
            "batch_windows": 1,
            "max_in_flight": 1,  # one window in flight: cancelling stops after it
        },
        environ={},
    )
    captioner = GatedCaptioner()
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=lambda: captioner
    )
    videos = _colour_videos(tmp_path, 3)
    poll = cli._IngestRun._poll
    pressed = threading.Event()

    def poll_then_ctrl_c(self, *args):
        poll(self, *args)
        if not pressed.is_set() and captioner.waiting.is_set():
            pressed.set()
            threading.Timer(0.5, captioner.gate.set).start()  # the window in hand completes
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._IngestRun, "_poll", poll_then_ctrl_c)
    try:
        code = main(
            ["ingest", *videos, "--workers", "2", "--json", "--server", f"127.0.0.1:{port}"]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 130 and out["interrupted"]
        first, second, third = (out["results"][v] for v in videos)
        # The running job committed the window it was captioning, then stopped.
        assert (first["status"], first["windows_done"], first["windows"]) == ("cancelled", 1, 2)
        assert len(app.store.window_rows(first["video_id"])) == 1
        assert second["status"] == "cancelled" and second["windows_done"] == 0
        assert third["status"] == "not started"
    finally:
        captioner.gate.set()
        server.stop(0)
        app.shutdown()


def test_output_into_a_closed_pipe_ends_quietly(data_dir: Path, embedder):
    """`vidseek videos | head -0`: the reader is gone before the command writes."""
    import subprocess
    import sys

    settings = load_settings(overrides={"port": 0, "data_dir": str(data_dir)}, environ={})
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=ColourCaptioner
    )
    try:
        index_videos(app.store, embedder)
        read, write = os.pipe()
        os.close(read)  # no reader at all: the first write or flush gets EPIPE
        proc = subprocess.run(
            [sys.executable, "-m", "vidseek.server.cli", "videos", "--server", f"127.0.0.1:{port}"],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
        os.close(write)
    finally:
        server.stop(0)
        app.shutdown()
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        (["db", "upgrade"], ["--data-dir", "--database-url"], ["--grpc-workers", "--index-kind"]),
        (["index", "rebuild"], ["--data-dir", "--index-kind", "--ivf-nlist"], ["--grpc-workers"]),
        (["serve"], ["--data-dir", "--grpc-workers", "--index-kind"], []),
    ],
)
def test_maintenance_commands_list_only_the_settings_they_read(
    command, shown, hidden, capsys: pytest.CaptureFixture
):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in shown) and not any(flag in out for flag in hidden)


def test_video_timeline_and_delete_commands(corpus_server, capsys: pytest.CaptureFixture):
    addr, ids = corpus_server
    kitchen = ids["kitchen"]
    assert main(["video", kitchen, "--json", *addr]) == 0
    video = json.loads(capsys.readouterr().out)
    assert (video["video_id"], video["event_count"]) == (kitchen, 4)

    assert main(["timeline", kitchen, "--from", "0:15", "--to", "25", "--json", *addr]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["description"] for e in events] == [
        "The chef fries the chopped onions in a pan.",
        "The chef plates the dish and serves it.",
    ]
    assert main(["timeline", kitchen, *addr]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0:00:00-0:00:10  A chef chops onions on a wooden board." and len(lines) == 4

    assert main(["delete", kitchen, "nosuchvideo", *addr]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{kitchen}  deleted (4 events)" and "not found" in out[1]
    assert main(["video", kitchen, *addr]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["search", "onions", "--json", *addr]) == 0
    moments = json.loads(capsys.readouterr().out)["moments"]
    assert moments and kitchen not in {m["video_id"] for m in moments}


def test_ingest_progress_without_a_terminal_is_plain_lines(
    data_dir: Path, embedder, tmp_path: Path, capsys: pytest.CaptureFixture
):
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "window_seconds": 6.0}, environ={}
    )
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=ColourCaptioner
    )
    try:
        videos = _colour_videos(tmp_path, 2)
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"\x00" * 1000)
        paths = [str(bad), *videos]
        assert main(["ingest", *paths, "--server", f"127.0.0.1:{port}"]) == 1
    finally:
        server.stop(0)
        app.shutdown()
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err  # no progress-bar redraws in a log
    for v in videos:
        assert f"vidseek: succeeded: {v}" in err
    assert "vidseek: 3/3 videos done" in err
    assert f"vidseek: failed: {bad}: " in err  # as it happens, not only in the summary
    assert err.index(f"vidseek: failed: {bad}") < err.index("vidseek: 3/3 videos done")
