"""The `vidseek` command against a real server: exit codes and output scripts can trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner
from vidseek.server.app import create_server
from vidseek.server.cli import main
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

        assert main(["ingest", str(colour_video), *addr]) == 0
        assert "1 indexed" in capsys.readouterr().out

        assert main(["search", "a green screen", "--json", *addr]) == 0
        moments = json.loads(capsys.readouterr().out)
        assert moments[0]["description"] == "a green screen"
        assert 2.0 <= moments[0]["start_seconds"] < moments[0]["end_seconds"] <= 4.0

        assert main(["search", "", *addr]) == 1
        assert "INVALID_ARGUMENT" in capsys.readouterr().err

        assert main(["videos", "--json", *addr]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 1
        assert main(["jobs", *addr]) == 0
        assert "succeeded" in capsys.readouterr().out
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
    assert main(["db", "upgrade", "--port", "notaport"]) == 2
    assert "port" in capsys.readouterr().err
