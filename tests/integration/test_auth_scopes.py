"""Scoped tokens over the wire, and the refusal to serve a reachable host without auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ColourCaptioner
from vidseek.client import (
    Client,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from vidseek.server.app import create_server
from vidseek.server.cli import main
from vidseek.server.settings import load_settings
from vidseek.storage.errors import ConfigError

READ, WRITE = "reader-token-1", "writer-token-2"


@pytest.fixture
def scoped(data_dir: Path, embedder, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may do what\nread {READ}\n\nwrite {WRITE}  # the ingest bot\n")
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), "auth_tokens_file": str(tokens)},
        environ={},
    )
    server, port, app = create_server(
        settings, embedder=embedder, captioner_factory=ColourCaptioner
    )
    try:
        yield port, tmp_path
    finally:
        server.stop(0)
        app.shutdown()


def test_read_tokens_read_and_write_tokens_write(scoped, colour_video: Path):
    port, _ = scoped
    target = f"127.0.0.1:{port}"
    with (
        Client(target, token=READ, retries=0) as reader,
        Client(target, token=WRITE, retries=0) as writer,
    ):
        assert list(reader.search("a red screen")) == []
        assert list(reader.list_jobs()) == [] and list(reader.list_videos()) == []
        with pytest.raises(PermissionDeniedError, match="IngestVideo needs a read-write token"):
            reader.ingest(str(colour_video))
        with pytest.raises(PermissionDeniedError, match="DeleteVideo"):
            reader.delete_video("abc")
        with pytest.raises(PermissionDeniedError, match="CancelIngestJob"):
            reader.cancel_job("abc")
        job = writer.wait_for_job(writer.ingest(str(colour_video)).job_id, timeout=120)
        assert job.state.value == "succeeded"
        assert reader.search("a red screen", min_score=-1.0)  # readers see it
        with pytest.raises(NotFoundError):  # past the token check: the video is unknown
            writer.delete_video("abc")
    with Client(target, retries=0) as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.search("a red screen")


def test_cli_with_a_read_only_token_file_cannot_delete(scoped, capsys: pytest.CaptureFixture):
    port, tmp = scoped
    (tmp / "read.token").write_text(READ)
    args = ["--server", f"127.0.0.1:{port}", "--token-file", str(tmp / "read.token")]
    assert main(["videos", *args]) == 0
    assert main(["delete", "abc", *args]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_a_reachable_host_without_a_token_is_refused(data_dir: Path, embedder, tmp_path: Path):
    base = {"port": 0, "data_dir": str(data_dir), "host": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"refusing to serve 0\.0\.0\.0 without a token"):
        create_server(load_settings(overrides=base, environ={}), embedder=embedder)
    for extra in ({"auth_token": "t"}, {"allow_unauthenticated": True}):
        server, _, app = create_server(
            load_settings(overrides={**base, **extra}, environ={}), embedder=embedder
        )
        server.stop(0)
        app.shutdown()


def test_a_bad_tokens_file_names_the_line(tmp_path: Path):
    bad = tmp_path / "tokens"
    bad.write_text("read ok-token\nadmin root-token\n")
    settings = load_settings(overrides={"auth_tokens_file": str(bad)}, environ={})
    with pytest.raises(ConfigError, match=r"tokens:2: expected 'read TOKEN' or 'write TOKEN'"):
        settings.auth_tokens()
    missing = load_settings(overrides={"auth_tokens_file": str(tmp_path / "nope")}, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        missing.auth_tokens()
