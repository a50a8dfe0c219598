"""The interceptor on every handler kind: bearer token, error mapping, request ids."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from vidseek.server.interceptors import ErrorAndAuthInterceptor
from vidseek.storage.errors import NotFound

TOKEN = "s3cret-token"
KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _outcome(request: bytes) -> bytes:
    if request == b"missing":
        raise NotFound("no such thing")
    if request == b"boom":
        raise RuntimeError("unexpected")
    return request.upper()


def _handlers() -> grpc.GenericRpcHandler:
    def uu(request: bytes, context: Any) -> bytes:
        return _outcome(request)

    def us(request: bytes, context: Any) -> Iterator[bytes]:
        yield _outcome(request)
        yield b"again"

    def su(requests: Iterator[bytes], context: Any) -> bytes:
        return b"".join(_outcome(r) for r in requests)

    def ss(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for r in requests:
            yield _outcome(r)

    return grpc.method_handlers_generic_handler(
        "test.Kinds",
        {
            "unary_unary": grpc.unary_unary_rpc_method_handler(uu),
            "unary_stream": grpc.unary_stream_rpc_method_handler(us),
            "stream_unary": grpc.stream_unary_rpc_method_handler(su),
            "stream_stream": grpc.stream_stream_rpc_method_handler(ss),
        },
    )


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(
        futures.ThreadPoolExecutor(4), interceptors=[ErrorAndAuthInterceptor({TOKEN: "write"})]
    )
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(None)


def _call(channel: grpc.Channel, kind: str, payload: bytes, auth: str | None) -> list[bytes]:
    metadata = () if auth is None else (("authorization", auth),)
    method = f"/test.Kinds/{kind}"
    if kind == "unary_unary":
        return [channel.unary_unary(method)(payload, metadata=metadata, timeout=10)]
    if kind == "unary_stream":
        return list(channel.unary_stream(method)(payload, metadata=metadata, timeout=10))
    if kind == "stream_unary":
        return [channel.stream_unary(method)(iter([payload]), metadata=metadata, timeout=10)]
    return list(channel.stream_stream(method)(iter([payload]), metadata=metadata, timeout=10))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_every_handler_kind_refuses_a_missing_or_wrong_token(channel, kind, auth):
    with pytest.raises(grpc.RpcError) as err:
        _call(channel, kind, b"hi", auth)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_every_handler_kind_answers_the_right_token_in_any_scheme_case(channel, kind, scheme):
    assert _call(channel, kind, b"hi", f"{scheme} {TOKEN}")[0] == b"HI"


@pytest.mark.parametrize("kind", KINDS)
def test_every_handler_kind_maps_errors_to_codes(channel, kind, caplog):
    with pytest.raises(grpc.RpcError) as err:
        _call(channel, kind, b"missing", f"Bearer {TOKEN}")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no such thing" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        _call(channel, kind, b"boom", f"Bearer {TOKEN}")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details() or ""
    assert "request id" in details and "unexpected" not in details
    request_id = details.rsplit(" ", 1)[1].rstrip(")")
    assert any(request_id in r.getMessage() for r in caplog.records)


def test_every_answer_carries_a_request_id_that_errors_quote(channel):
    from vidseek.client.errors import ServerError, from_rpc_error

    auth = (("authorization", f"Bearer {TOKEN}"),)
    call = channel.unary_unary("/test.Kinds/unary_unary")
    _, done = call.with_call(b"hi", metadata=auth, timeout=10)
    (generated,) = [v for k, v in done.trailing_metadata() if k == "x-request-id"]
    assert len(generated) == 12
    _, done = call.with_call(b"hi", metadata=(*auth, ("x-request-id", "job-42.a")), timeout=10)
    assert ("x-request-id", "job-42.a") in done.trailing_metadata()  # the caller's own id
    with pytest.raises(grpc.RpcError) as err:
        call(b"boom", metadata=(*auth, ("x-request-id", "bad id!")), timeout=10)
    sdk_error = from_rpc_error(err.value)
    assert isinstance(sdk_error, ServerError) and len(sdk_error.request_id) == 12
    assert f"(request id {sdk_error.request_id})" in sdk_error.message  # a bad id is replaced
    with pytest.raises(grpc.RpcError) as err:
        call(b"hi", timeout=10)  # no token: the refusal carries an id too
    assert from_rpc_error(err.value).request_id


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_of_an_rpc_carry_its_request_id(channel, fmt):
    import io
    import json
    import logging

    from vidseek.client.errors import from_rpc_error
    from vidseek.server.logs import log_handler

    out = io.StringIO()
    handler = log_handler(fmt, stream=out)
    logger = logging.getLogger("vidseek.server.interceptors")
    logger.addHandler(handler)
    try:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/test.Kinds/unary_unary")(
                b"boom", metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10
            )
    finally:
        logger.removeHandler(handler)
    request_id = from_rpc_error(err.value).request_id
    text = out.getvalue()
    if fmt == "json":
        line = json.loads(text.splitlines()[0])
        assert (line["level"], line["request_id"]) == ("ERROR", request_id)
        assert request_id in line["message"] and "RuntimeError: unexpected" in line["exception"]
    else:
        assert f"ERROR vidseek.server.interceptors [{request_id}]: unexpected error" in text
