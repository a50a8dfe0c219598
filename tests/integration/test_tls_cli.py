"""The CLI and SDK against TLS and token-protected servers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidseek.client import (
    Client,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from vidseek.server.app import create_server
from vidseek.server.cli import main
from vidseek.server.settings import load_settings

TOKEN = "tls-test-token"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    san = ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *args, *san, *files], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    cert, key = _self_signed(d, "server")
    other, _ = _self_signed(d, "other")
    token = d / "token"
    token.write_text(f"{TOKEN}\n")
    return {"cert": cert, "key": key, "other": other, "token": token}


def _serve(data_dir: Path, embedder, **overrides: object) -> Iterator[int]:
    settings = load_settings(
        overrides={"port": 0, "data_dir": str(data_dir), **overrides}, environ={}
    )
    server, port, app = create_server(settings, embedder=embedder)
    try:
        yield port
    finally:
        server.stop(0)
        app.shutdown()


@pytest.fixture
def tls_port(data_dir: Path, embedder, certs) -> Iterator[int]:
    yield from _serve(
        data_dir,
        embedder,
        tls_cert_file=str(certs["cert"]),
        tls_key_file=str(certs["key"]),
        auth_token=TOKEN,
    )


def test_cli_over_tls_with_a_token_file(tls_port, certs, capsys: pytest.CaptureFixture):
    server = ["--server", f"localhost:{tls_port}", "--connect-timeout", "20"]
    ok = [*server, "--ca-file", str(certs["cert"]), "--token-file", str(certs["token"])]
    assert main(["videos", "--json", *ok]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    # The right TLS, the wrong token: the server answers UNAUTHENTICATED.
    assert main(["videos", *server, "--ca-file", str(certs["cert"]), "--token", "nope"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["videos", *ok, "--token", TOKEN]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["videos", *server, "--token-file", str(certs["cert"]) + ".missing"]) == 2
    assert "cannot read the token file" in capsys.readouterr().err


def test_an_untrusted_certificate_fails_at_once_naming_tls(
    tls_port, certs, capsys: pytest.CaptureFixture
):
    t = time.monotonic()
    code = main(["videos", "--server", f"localhost:{tls_port}", "--ca-file", str(certs["other"])])
    assert code == 3 and time.monotonic() - t < 15  # not the 60 s connect timeout
    assert "TLS handshake" in capsys.readouterr().err


def test_tls_against_a_plaintext_server_fails_at_once_naming_tls(
    data_dir: Path, embedder, certs, capsys: pytest.CaptureFixture
):
    for port in _serve(data_dir, embedder):
        t = time.monotonic()
        assert main(["videos", "--server", f"localhost:{port}", "--tls"]) == 3
        assert time.monotonic() - t < 15
        assert "TLS handshake" in capsys.readouterr().err
        client = Client(f"localhost:{port}", root_certificates=certs["cert"].read_bytes())
        with client, pytest.raises(UnavailableError, match="TLS handshake"):
            client.wait_until_ready(30)


def test_client_variables_fill_in_the_flags_and_the_server_ignores_them(
    tls_port, certs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setenv("VIDSEEK_SERVER", f"localhost:{tls_port}")
    monkeypatch.setenv("VIDSEEK_CA_FILE", str(certs["cert"]))
    monkeypatch.setenv("VIDSEEK_TOKEN_FILE", str(certs["token"]))
    assert main(["videos", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["videos", "--token", "nope"]) == 1  # a flag beats the variable
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    # Client variables are not server settings, and not unknown ones either.
    assert load_settings(environ={"VIDSEEK_TOKEN_FILE": "x", "VIDSEEK_SERVER": "h:1"})


READER, WRITER = "matrix-reader", "matrix-writer"


@pytest.fixture
def tls_scoped_port(data_dir: Path, embedder, certs, tmp_path: Path) -> Iterator[int]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {READER}\nwrite {WRITER}\n")
    yield from _serve(
        data_dir,
        embedder,
        tls_cert_file=str(certs["cert"]),
        tls_key_file=str(certs["key"]),
        auth_tokens_file=str(tokens),
    )


@pytest.mark.parametrize(
    ("token", "search", "ingest", "watch"),
    [
        (None, UnauthenticatedError, UnauthenticatedError, UnauthenticatedError),
        ("not-a-token", UnauthenticatedError, UnauthenticatedError, UnauthenticatedError),
        (READER, None, PermissionDeniedError, NotFoundError),
        (WRITER, None, NotFoundError, NotFoundError),
    ],
    ids=["no token", "wrong token", "read-only token", "read-write token"],
)
def test_the_auth_matrix_over_tls_for_unary_and_streaming_rpcs(
    tls_scoped_port, certs, token, search, ingest, watch
):
    """Search (unary, read), IngestVideo (unary, write), WatchIngestJob (server stream, read).

    Past the token check each call meets an ordinary answer: an empty search, an
    unknown file, an unknown job.
    """
    with Client(
        f"localhost:{tls_scoped_port}",
        token=token,
        tls=True,
        root_certificates=certs["cert"].read_bytes(),
        retries=0,
    ) as client:
        calls = {
            "search": lambda: client.search("a red screen"),
            "ingest": lambda: client.ingest("/no/such/video.mp4"),
            "watch": lambda: client.wait_for_job("no-such-job", timeout=10),
        }
        for name, expected in (("search", search), ("ingest", ingest), ("watch", watch)):
            if expected is None:
                calls[name]()
            else:
                with pytest.raises(expected):
                    calls[name]()
