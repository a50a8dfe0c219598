"""The one place domain errors become gRPC status codes; bearer-token auth with scopes."""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vidseek.server.logs import REQUEST_ID
from vidseek.storage.errors import VidseekError

__all__ = ["REQUEST_ID_KEY", "SCOPES", "WRITE_METHODS", "ErrorAndAuthInterceptor"]

REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

log = logging.getLogger(__name__)

# Health checks and reflection stay open so probes and grpcurl work without a token.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
SCOPES = ("read", "write")
# RPCs that change state need a "write" token; every other RPC takes a "read" one.
WRITE_METHODS = frozenset(
    f"/vidseek.v1.VideoSearch/{m}" for m in ("IngestVideo", "CancelIngestJob", "DeleteVideo")
)


# An RPC handler's behaviour: (request or request iterator, context) -> answer or answers.
Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    once: Callable[[Behaviour], Behaviour],
    stream: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour wrapped, whatever its kind.

    ``once`` wraps the behaviour of handlers that answer once (unary-unary,
    stream-unary), ``stream`` that of handlers that stream their answers
    (unary-stream, stream-stream); the (de)serialisers stay.
    """
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(once(handler.unary_unary), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(once(handler.stream_unary), **codec)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **codec)
    return handler


def rich_status(code: grpc.StatusCode, exc: VidseekError) -> grpc.Status:
    """The error as a ``google.rpc.Status``: its message, and the details it names.

    A field at fault becomes a ``BadRequest`` field violation; a retry delay a
    ``RetryInfo``. The plain status code and message stay what they were, so
    clients that read no details lose nothing.
    """
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    if exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=str(exc)
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    if exc.retry_after > 0:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(exc.retry_after * 1e9))
        detail = any_pb2.Any()
        detail.Pack(retry)
        status.details.append(detail)
    return rpc_status.to_status(status)


class ErrorAndAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Maps :class:`VidseekError` to its status code and checks the bearer token.

    Wraps every handler kind (unary and streaming requests and responses), so no
    RPC skips the token check. ``tokens`` maps each accepted token to its scope:
    ``"write"`` (every RPC) or ``"read"`` (every RPC but :data:`WRITE_METHODS`,
    which answer PERMISSION_DENIED); none means no auth. The scheme is matched
    case-insensitively (``Bearer``, ``bearer``), as HTTP does; tokens in
    constant time.
    """

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        for token, scope in (tokens or {}).items():
            if not token or scope not in SCOPES:
                raise ValueError(f"bad token entry: scope {scope!r}")
        self._tokens = [(t.encode(), scope) for t, scope in (tokens or {}).items()]

    def _scope(self, metadata: dict[str, Any]) -> str | None:
        """The scope of the request's token; None if it carries no accepted token."""
        scheme, _, token = str(metadata.get("authorization", "")).strip().partition(" ")
        given = token.strip().encode()
        found = None
        for known, scope in self._tokens:  # no early exit: the time does not tell which
            if hmac.compare_digest(given, known) and scheme.lower() == "bearer":
                found = scope
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        # Every answer carries a request id in its trailing metadata (the caller's
        # own, if it sent a well-formed one), quoted in INTERNAL errors and logs.
        given = str(metadata.get(REQUEST_ID_KEY, ""))
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:12]

        def check(context: grpc.ServicerContext) -> None:
            REQUEST_ID.set(request_id)  # this thread's log lines name the RPC
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            if not self._tokens:
                return
            scope = self._scope(metadata)
            if scope is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            if scope == "read" and method in WRITE_METHODS:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method.rsplit('/', 1)[1]} needs a read-write token; this one is read-only",
                )

        def fail(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
            if isinstance(exc, VidseekError):
                code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
                context.abort_with_status(rich_status(code, exc))
            log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")

        def answer_once(behaviour: Behaviour) -> Behaviour:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                check(context)
                try:
                    return behaviour(request, context)
                except Exception as exc:
                    fail(context, exc)

            return call

        def answer_stream(behaviour: Behaviour) -> Behaviour:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check(context)
                try:
                    yield from behaviour(request, context)
                except Exception as exc:
                    fail(context, exc)

            return call

        return rewrap(handler, answer_once, answer_stream)
